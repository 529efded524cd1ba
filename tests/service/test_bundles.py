"""Config bundles carry their provenance, and records of another TVM version stay out unless asked.

A real service on loopback; two workers of one target report over HTTP, one
running this TVM and one claiming another version; the bundles are real zips
whose JSONDatabase TVM loads.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import Live
from sqlalchemy import select
from test_api_leases import seed

from common.targets import canonical_target
from factories import SCHEDULE_TRACE
from db.models import Candidate, Task
from tuner.configs import current_tvm_version

ROOT = Path(__file__).resolve().parents[2]
OTHER_TVM = "0.19.0"


def _worker(live: Live, target: dict[str, Any], name: str, tvm: str) -> tuple[httpx.Client, int]:
    client = live.client(live.token("worker"))
    r = client.post("/workers", json={"name": name, "target": target, "hardware": {"cpu": f"cpu of {name}", "tvm": tvm}})
    assert r.status_code == 201, r.text
    return client, r.json()["id"]


def _measure(client: httpx.Client, wid: int, secs: float) -> int:
    lease = client.post("/leases", json={"worker_id": wid, "max_candidates": 1}).json()
    (cand,) = lease["candidates"]
    r = client.post(f"/leases/{lease['lease_id']}/results",
                    json={"worker_id": wid, "results": [{"candidate_id": cand["id"], "run_secs": [secs, secs]}]})
    assert r.status_code == 200 and r.json()["accepted"] == [cand["id"]], r.text
    return cand["id"]


def _manifest(data: bytes) -> dict[str, Any]:
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert {"database_workload.json", "database_tuning_record.json", "manifest.json"} <= set(zf.namelist())
    return json.loads(zf.read("manifest.json"))


def test_manifest_carries_provenance_and_other_tvm_stays_out(live: Live, tmp_path: Path) -> None:
    target, cids, shash = seed(live, 2, SCHEDULE_TRACE)
    key = canonical_target(target)[1]
    current = current_tvm_version()
    ours, ours_id = _worker(live, target, "ours", current)
    old, old_id = _worker(live, target, "old", OTHER_TVM)
    mine = _measure(ours, ours_id, 2e-3)
    _measure(old, old_id, 1e-3)  # faster, but measured under another TVM

    with live.session() as s:
        job_id = s.execute(select(Task.job_id).join(Candidate, Candidate.task_id == Task.id)
                           .where(Candidate.id == mine)).scalar_one()

    r = live.admin.get("/configs", params={"job": job_id})
    assert r.status_code == 200, r.text
    manifest = _manifest(r.content)
    assert manifest["tvm_version"] == current and manifest["target_key"] == key
    assert manifest["bundle"] == {"kind": "job", "job": job_id}
    assert manifest["include_other_tvm"] is False
    assert manifest["other_tvm_excluded"] == {OTHER_TVM: 1}
    assert manifest["records"] == 1
    prov = manifest["provenance"][shash]
    assert prov["candidate_id"] == mine and prov["tvm_version"] == current
    assert prov["job_id"] == job_id and prov["round"] == 0 and prov["transferred"] is False
    assert prov["trials"] == 2 and prov["valid_trials"] == 2
    assert prov["measured_at"] and prov["first_measured_at"] <= prov["measured_at"] <= prov["last_measured_at"]
    (measured_by,) = [w for w in prov["workers"] if w["role"] == "measured"]
    assert measured_by["id"] == ours_id and measured_by["name"] == "ours"
    assert measured_by["tvm_version"] == current and measured_by["cpu"] == "cpu of ours"
    assert "calibration" in measured_by and measured_by["suspect"] is False
    records = zipfile.ZipFile(io.BytesIO(r.content)).read("database_tuning_record.json").decode().strip().splitlines()
    assert len(records) == 1 and json.loads(records[0])[1][1] == pytest.approx([2e-3, 2e-3])  # ours, not the old one

    # Asked for: the faster record of the other version is the best, stamped as such.
    r = live.admin.get("/configs", params={"job": job_id, "include_other_tvm": "true"})
    assert r.status_code == 200, r.text
    manifest = _manifest(r.content)
    assert manifest["include_other_tvm"] is True and manifest["other_tvm_excluded"] == {}
    prov = manifest["provenance"][shash]
    assert prov["tvm_version"] == OTHER_TVM and prov["workers"][0]["id"] == old_id

    # The best known for the target: the same workload, from any model's job.
    r = live.admin.get("/configs/best-known", params={"target": json.dumps(target)})
    assert r.status_code == 200, r.text
    manifest = _manifest(r.content)
    assert manifest["bundle"] == {"kind": "best_known"}
    assert manifest["provenance"][shash]["candidate_id"] == mine

    # ... and through the CLI, into a folder TVM loads.
    out = tmp_path / "best"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEHUB_")}
    env.update(PYTHONPATH=str(ROOT), TUNEHUB_DATA_DIR=str(tmp_path / "cli-data"))
    proc = subprocess.run(
        [sys.executable, "-m", "tunehub", "configs", "--best-known", "--target", json.dumps(target), "-o", str(out),
         "--server", live.base_url, "--token", live.admin_token],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((out / "manifest.json").read_text())["provenance"][shash]["candidate_id"] == mine
    from tvm.s_tir import meta_schedule as ms

    assert len(ms.database.JSONDatabase(work_dir=str(out)).get_all_tuning_records()) == 1


def test_only_other_tvm_records_is_a_404_that_says_how_to_ask(live: Live) -> None:
    target, _, _ = seed(live, 1, SCHEDULE_TRACE)
    old, old_id = _worker(live, target, "old-only", OTHER_TVM)
    _measure(old, old_id, 1e-3)
    r = live.admin.get("/configs/best-known", params={"target": json.dumps(target)})
    assert r.status_code == 404, r.text
    assert "include_other_tvm=true" in r.json()["detail"] and OTHER_TVM in r.json()["detail"]
    assert live.admin.get("/configs/best-known", params={"target": json.dumps(target),
                                                         "include_other_tvm": "true"}).status_code == 200
    assert live.admin.get("/configs/best-known").status_code == 422
