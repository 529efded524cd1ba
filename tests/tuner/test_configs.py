"""tuner.configs: best records → MetaSchedule JSONDatabase zip → TVM loads and compiles with it."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tvm_helpers import matmul_workload, real_candidates

from db.records import BestRecord
from common.errors import BadInput
from common.tvm_json import args_info_json, workload_hash, workload_to_json
from tuner.configs import RECORD_FILE, WORKLOAD_FILE, build_config_zip, extract_config_zip


def _record(n: int, trace_json: str, workload_id: int, run_secs: list[float]) -> BestRecord:
    mod = matmul_workload(n)
    return BestRecord(
        workload_id=workload_id,
        shash=workload_hash(mod),
        mod_json=workload_to_json(mod),
        args_info_json=args_info_json(mod),
        trace_json=trace_json,
        run_secs=run_secs,
        mean_secs=sum(run_secs) / len(run_secs),
        candidate_id=100 + workload_id,
    )


@pytest.fixture(scope="module")
def records() -> list[BestRecord]:
    good = _record(64, real_candidates(64, count=2)[0], 1, [2.5e-4, 2.7e-4])
    broken = _record(32, '[[["NoSuchInstruction",[],[],[]]],[]]', 2, [1e-4])  # must be skipped, not shipped
    return [good, broken]


def _build_and_check(mod: Any, database: Any, target: dict[str, Any]) -> None:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    sch = ms.tir_integration.compile_tir(database, mod, tvm.target.Target(target))
    assert sch is not None, "the database did not give a schedule for a freshly built workload"
    assert sch.trace is not None and len(sch.trace.insts) > 3  # a real tuned schedule, not the identity
    func = tvm.compile(sch.mod, target=tvm.target.Target(target))
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((64, 64)).astype("float32") for _ in range(2))
    c = tvm.runtime.tensor(np.zeros((64, 64), "float32"))
    func(tvm.runtime.tensor(a), tvm.runtime.tensor(b), c)
    np.testing.assert_allclose(c.numpy(), a @ b, rtol=1e-4, atol=1e-4)


def test_zip_loads_in_tvm_and_compiles(records: list[BestRecord], cpu_target: dict[str, Any], tmp_path: Path) -> None:
    from tvm.s_tir import meta_schedule as ms

    data = build_config_zip(records, cpu_target)
    assert data == build_config_zip(records, cpu_target)  # same records, same bytes
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == sorted([WORKLOAD_FILE, RECORD_FILE, "manifest.json", "README.txt"])
        manifest = json.loads(zf.read("manifest.json"))
        workload_lines = zf.read(WORKLOAD_FILE).decode().splitlines()
        record_lines = zf.read(RECORD_FILE).decode().splitlines()
    assert manifest["workloads"] == 1 and manifest["records"] == 1
    assert manifest["target"]["kind"] == "llvm" and manifest["target"]["num-cores"] == 2
    (skipped,) = manifest["skipped"]
    assert skipped["workload_id"] == 2 and "NoSuchInstruction" in skipped["reason"]

    # TVM_NOTES §3: one JSON value per line; the workload key is the structural hash
    assert len(workload_lines) == 1 and len(record_lines) == 1
    assert json.loads(workload_lines[0])[0] == records[0].shash
    index, (trace, run_secs, target, args_info) = json.loads(record_lines[0])
    assert index == 0 and run_secs == pytest.approx([2.5e-4, 2.7e-4])
    assert target["kind"] == "llvm" and target["num-cores"] == 2
    assert args_info == json.loads(records[0].args_info_json)
    assert trace == json.loads(records[0].trace_json)  # replayed, same instructions and decisions

    folder = extract_config_zip(data, tmp_path / "configs")
    database = ms.database.JSONDatabase(work_dir=str(folder), allow_missing=False)
    mod = matmul_workload(64)  # built from scratch, not the object the records came from
    assert database.has_workload(mod)
    assert not database.has_workload(matmul_workload(32))
    _build_and_check(mod, database, cpu_target)


def test_empty_records_give_an_empty_database(cpu_target: dict[str, Any], tmp_path: Path) -> None:
    from tvm.s_tir import meta_schedule as ms

    folder = extract_config_zip(build_config_zip([], cpu_target), tmp_path)
    database = ms.database.JSONDatabase(work_dir=str(folder), allow_missing=False)
    assert len(database) == 0


def test_bad_target(records: list[BestRecord]) -> None:
    with pytest.raises(BadInput, match="target"):
        build_config_zip(records, {"kind": "no-such-kind"})


def _zip(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, payload in members.items():
            info = zipfile.ZipInfo(name)
            if name == symlink:
                info.external_attr = 0o120777 << 16
            zf.writestr(info, payload)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("members", "symlink", "match"),
    [
        ({"../database_workload.json": b"", RECORD_FILE: b""}, None, "unsafe path"),
        ({"/tmp/database_workload.json": b"", RECORD_FILE: b""}, None, "unsafe path"),
        ({"a/../../database_workload.json": b"", RECORD_FILE: b""}, None, "unsafe path"),
        ({WORKLOAD_FILE: b"", RECORD_FILE: b"", "evil.py": b"print(1)"}, None, "not one of"),
        ({WORKLOAD_FILE: b"/etc/passwd", RECORD_FILE: b""}, WORKLOAD_FILE, "symbolic link"),
        ({WORKLOAD_FILE: b""}, None, "lacks"),
    ],
)
def test_extract_refuses_unsafe_zips(members: dict[str, bytes], symlink: str | None, match: str, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(BadInput, match=match):
        extract_config_zip(_zip(members, symlink), dest)
    assert not (tmp_path / WORKLOAD_FILE).exists()
    assert not dest.exists() or not any(dest.iterdir())


def test_extract_refuses_broken_zips(cpu_target: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not a valid config zip"):
        extract_config_zip(b"PK\x03\x04 not really", tmp_path)
    data = build_config_zip([], cpu_target)
    with pytest.raises(BadInput, match="not a valid config zip"):
        extract_config_zip(data[: len(data) // 2], tmp_path)  # truncated download
    with pytest.raises(BadInput, match="more than"):
        extract_config_zip(data, tmp_path, max_bytes=10)
