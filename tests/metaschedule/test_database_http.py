"""``tunehub.metaschedule.Database`` over the service's HTTP API answers as ``JSONDatabase`` does.

A real service (uvicorn on loopback, SQLite and PostgreSQL) and a user token;
the contract's scenarios run side by side with ``JSONDatabase``. Records are
attributed to the token, and a worker token may not write.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TARGET, make_record, matmul_relu, split_trace
from test_database_contract import _commit_mix, _same
from tvm.s_tir import meta_schedule as ms
from tvm_helpers import matmul_workload

from db.user_records import UserRecord
from tunehub.metaschedule import Database

sys.path.insert(0, str(Path(__file__).parents[1] / "service"))
from live_server import Live, running


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[Live]:
    with running(db_url, tmp_path / "live") as svc:
        yield svc


def _json_db(tmp_path: Path, equality: str = "structural") -> Any:
    (tmp_path / "json").mkdir(exist_ok=True)
    return ms.database.JSONDatabase(work_dir=str(tmp_path / "json"), module_equality=equality)


def test_http_database_matches_json_database(live: Live, tmp_path: Path) -> None:
    token = live.token("user", "alice")
    ours, theirs = Database(live.base_url, target=TARGET, token=token), _json_db(tmp_path)
    matmul, other = matmul_workload(16), matmul_workload(32)
    for db in (ours, theirs):
        _commit_mix(db, matmul)
        db.commit_workload(other)
    for mod in (matmul, other, matmul_workload(8)):
        _same(ours, theirs, mod)
    # a second client (another machine) sees the same, and a reload of the JSON files agrees
    reader = Database(live.base_url, target=TARGET, token=live.token("user", "bob"))
    _same(reader, ms.database.JSONDatabase(work_dir=str(tmp_path / "json")), matmul)
    n = len(ours)  # before the session below: on SQLite it holds the write lock
    with live.session() as s:
        owners = {o for (o,) in s.query(UserRecord.owner)}
        assert s.query(UserRecord).count() == n
    assert len(owners) == 1 and next(iter(owners)).startswith("token:")  # attributed to alice's token


def test_http_database_module_equality(live: Live, tmp_path: Path) -> None:
    token = live.token("user")
    ours = Database(live.base_url, target=TARGET, token=token, module_equality="anchor-block")
    theirs = _json_db(tmp_path, "anchor-block")
    matmul, variant = matmul_workload(16), matmul_relu(16)
    for db in (ours, theirs):
        wl = db.commit_workload(matmul)
        db.commit_tuning_record(make_record(wl, split_trace(matmul, 4), [2e-3]))
        db.commit_tuning_record(make_record(db.commit_workload(variant), split_trace(variant, 2), [1e-3]))
    for mod in (matmul, variant):
        _same(ours, theirs, mod)


def test_http_database_needs_a_user_token(live: Live) -> None:
    worker = Database(live.base_url, target=TARGET, token=live.token("worker"))
    with pytest.raises(Exception, match="403 forbidden"):  # TVM's FFI re-raises the client's Forbidden
        worker.commit_workload(matmul_workload(16))
    assert len(Database(live.base_url, target=TARGET, token=live.token("user"))) == 0
