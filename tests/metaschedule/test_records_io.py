"""``tunehub records import/export``: a user's MetaSchedule work dir into tunehub and back, through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import TARGET, views
from test_database_contract import _commit_mix
from tvm.s_tir import meta_schedule as ms
from tvm_helpers import matmul_workload

from tunehub.metaschedule import Database


def _cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "tunehub", "records", *args], capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_import_then_export_round_trips(db_url: str, tmp_path: Path) -> None:
    import json

    work_dir = tmp_path / "wd"
    work_dir.mkdir()
    src = ms.database.JSONDatabase(work_dir=str(work_dir))
    mod = matmul_workload(16)
    _commit_mix(src, mod)
    target = json.dumps(TARGET)
    assert "imported 9 records of 1 workloads" in _cli("import", str(work_dir), "--target", target, "--database", db_url)
    ours = Database(db_url, target=TARGET)
    assert views(ours.get_all_tuning_records()) == views(src.get_all_tuning_records())

    _cli("export", "-o", str(tmp_path / "all"), "--target", target, "--database", db_url)
    back = ms.database.JSONDatabase(work_dir=str(tmp_path / "all"))
    assert views(back.get_all_tuning_records()) == views(src.get_all_tuning_records())
    _cli("export", "-o", str(tmp_path / "best"), "--target", target, "--top", "2", "--database", db_url)
    best = ms.database.JSONDatabase(work_dir=str(tmp_path / "best"))
    assert views(best.get_all_tuning_records()) == views(src.get_top_k(src.commit_workload(mod), 2))
