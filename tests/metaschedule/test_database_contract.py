"""``tunehub.metaschedule.Database`` answers as MetaSchedule's ``JSONDatabase`` does, on SQLite and PostgreSQL.

Each scenario of TVM's own database tests (workloads, records, top-k order and
validity, queries, reload, Union/OrderedUnion/ScheduleFnDatabase, module
equality) runs on both databases side by side and compares what they return.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tvm
from conftest import (
    TARGET,
    empty_trace,
    make_record,
    matmul_relu,
    split_trace,
    view,
    views,
)
from sqlalchemy.orm import Session, sessionmaker
from tvm.s_tir import meta_schedule as ms
from tvm_helpers import matmul_workload

from db import ranking
from db.engine import session_scope
from db.ms_database import SqlDatabase
from db.user_records import UserRecord
from tunehub.metaschedule import Database

# run_secs of every record committed in ``_commit_mix`` (with trace factor), valid or not, ties included.
MIX: list[tuple[int, list[float] | None]] = [
    (2, [3.0e-3]),
    (4, [1e10]),  # TVM's failed stub: invalid
    (8, [2e10]),  # above the stub but not it: valid for TVM
    (2, None),  # no run_secs: invalid
    (-1, [5e-4]),  # empty trace: invalid
    (4, [1.0e-3]),
    (2, []),  # empty run_secs: invalid
    (8, [1.0e-3]),  # tie with the one above: commit order decides
    (0, [1e10, 1.0e-3]),  # one real run: valid
]


def _pair(session_factory: sessionmaker[Session], tmp_path: Path, equality: str = "structural") -> tuple[Any, Any]:
    ours = Database(session_factory, target=TARGET, module_equality=equality, owner="alice@test")
    (tmp_path / "json").mkdir(exist_ok=True)
    theirs = ms.database.JSONDatabase(work_dir=str(tmp_path / "json"), module_equality=equality)
    return ours, theirs


def _commit_mix(db: Any, mod: Any) -> Any:
    wl = db.commit_workload(mod)
    for factor, secs in MIX:
        trace = empty_trace(mod) if factor < 0 else split_trace(mod, factor)
        db.commit_tuning_record(make_record(wl, trace, secs))
    return wl


def _same(ours: Any, theirs: Any, mod: Any) -> None:
    """Every read of the contract gives the same answer on both."""
    assert len(ours) == len(theirs)
    assert ours.has_workload(mod) == theirs.has_workload(mod)
    assert views(ours.get_all_tuning_records()) == views(theirs.get_all_tuning_records())
    if theirs.has_workload(mod):
        wl_o, wl_t = ours.commit_workload(mod), theirs.commit_workload(mod)
        tvm.ir.assert_structural_equal(wl_o.mod, wl_t.mod)
        for k in (0, 1, 2, 3, 20):
            assert views(ours.get_top_k(wl_o, k)) == views(theirs.get_top_k(wl_t, k)), k


def test_workloads(session_factory: sessionmaker[Session], tmp_path: Path, matmul: Any) -> None:
    ours, theirs = _pair(session_factory, tmp_path)
    other = matmul_workload(32)
    for db in (ours, theirs):
        assert not db.has_workload(matmul)
        db.commit_workload(matmul)
        db.commit_workload(matmul_workload(16))  # a rebuilt, equal module: no second workload
    for mod in (matmul, matmul_workload(16), other):
        _same(ours, theirs, mod)
    assert ours.has_workload(matmul_workload(16)) and not ours.has_workload(other)
    assert ours.get_top_k(ours.commit_workload(matmul), 5) == []


def test_records_top_k_validity_and_order(session_factory: sessionmaker[Session], tmp_path: Path, matmul: Any) -> None:
    ours, theirs = _pair(session_factory, tmp_path)
    for db in (ours, theirs):
        _commit_mix(db, matmul)
    _same(ours, theirs, matmul)
    top = ours.get_top_k(ours.commit_workload(matmul), 20)
    assert [view(r)[1] for r in top] == [[1.0e-3], [1.0e-3], [3.0e-3], [1e10, 1.0e-3], [2e10]]
    assert len(ours) == len(MIX)
    for db in (ours, theirs):
        with pytest.raises(ValueError):
            db.get_top_k(db.commit_workload(matmul), -1)


def test_top_k_is_per_workload(session_factory: sessionmaker[Session], tmp_path: Path, matmul: Any) -> None:
    ours, theirs = _pair(session_factory, tmp_path)
    other = matmul_workload(32)
    for db in (ours, theirs):
        _commit_mix(db, matmul)
        wl = db.commit_workload(other)
        db.commit_tuning_record(make_record(wl, split_trace(other, 4), [1e-6]))
    _same(ours, theirs, matmul)
    _same(ours, theirs, other)


def test_queries(session_factory: sessionmaker[Session], tmp_path: Path, matmul: Any) -> None:
    ours, theirs = _pair(session_factory, tmp_path)
    bare = matmul_workload(32)
    for db in (ours, theirs):
        _commit_mix(db, matmul)
        db.commit_workload(bare)  # a workload without records
    target = tvm.target.Target(TARGET)
    for mod in (matmul, bare, matmul_workload(8)):
        rec_o, rec_t = ours.query_tuning_record(mod, target, "main"), theirs.query_tuning_record(mod, target, "main")
        assert (rec_o is None) == (rec_t is None)
        if rec_t is not None:
            assert view(rec_o) == view(rec_t)
        sch_o, sch_t = ours.query_schedule(mod, target, "main"), theirs.query_schedule(mod, target, "main")
        assert (sch_o is None) == (sch_t is None)
        if sch_t is not None:
            tvm.ir.assert_structural_equal(sch_o.mod, sch_t.mod)
        mod_o, mod_t = ours.query_ir_module(mod, target, "main"), theirs.query_ir_module(mod, target, "main")
        assert (mod_o is None) == (mod_t is None)
        if mod_t is not None:
            tvm.ir.assert_structural_equal(mod_o, mod_t)
    assert ours.query_tuning_record(matmul, target, "main") is not None


def test_second_instance_sees_the_first(
    session_factory: sessionmaker[Session], db_url: str, tmp_path: Path, matmul: Any
) -> None:
    ours, theirs = _pair(session_factory, tmp_path)
    for db in (ours, theirs):
        _commit_mix(db, matmul)
    reader = Database(db_url, target=TARGET)  # its own engine, as another process would have
    reloaded = ms.database.JSONDatabase(work_dir=str(tmp_path / "json"))
    _same(reader, reloaded, matmul)
    # and a later commit by the first is seen by the second at once
    for db in (ours, theirs):
        db.commit_tuning_record(make_record(db.commit_workload(matmul), split_trace(matmul, 16), [1e-4]))
    assert view(reader.get_top_k(reader.commit_workload(matmul), 1)[0])[1] == [1e-4]
    reloaded = ms.database.JSONDatabase(work_dir=str(tmp_path / "json"))
    _same(reader, reloaded, matmul)


def test_composition(session_factory: sessionmaker[Session], tmp_path: Path, matmul: Any) -> None:
    ours, theirs = _pair(session_factory, tmp_path)
    for db in (ours, theirs):
        _commit_mix(db, matmul)
    target = tvm.target.Target(TARGET)

    def memory_with(secs: float) -> Any:
        mem = ms.database.MemoryDatabase()
        mem.commit_tuning_record(make_record(mem.commit_workload(matmul), split_trace(matmul, 16), [secs]))
        return mem

    def schedule_fn(sch: Any) -> bool:
        split_trace(sch.mod, 0)
        return True

    for secs in (1e-5, 1.0):  # the other database faster, then slower
        for compose in (
            lambda d, secs=secs: ms.database.UnionDatabase(d, memory_with(secs)),
            lambda d, secs=secs: ms.database.OrderedUnionDatabase(d, memory_with(secs)),
            lambda d, secs=secs: ms.database.OrderedUnionDatabase(memory_with(secs), d),
            lambda d: ms.database.OrderedUnionDatabase(ms.database.ScheduleFnDatabase(schedule_fn), d),
            lambda d: ms.database.OrderedUnionDatabase(d, ms.database.ScheduleFnDatabase(schedule_fn)),
        ):
            got_o = compose(ours).query_tuning_record(matmul, target, "main")
            got_t = compose(theirs).query_tuning_record(matmul, target, "main")
            assert view(got_o) == view(got_t)


@pytest.mark.parametrize("equality", ["structural", "ignore-tensor", "anchor-block"])
def test_module_equality(session_factory: sessionmaker[Session], tmp_path: Path, matmul: Any, equality: str) -> None:
    ours, theirs = _pair(session_factory, tmp_path, equality)
    variant = matmul_relu(16)
    for db in (ours, theirs):
        wl = db.commit_workload(matmul)
        db.commit_tuning_record(make_record(wl, split_trace(matmul, 4), [2e-3]))
        db.commit_workload(variant)
        wl2 = db.commit_workload(variant)
        db.commit_tuning_record(make_record(wl2, split_trace(variant, 2), [1e-3]))
    for mod in (matmul, variant, matmul_workload(16)):
        _same(ours, theirs, mod)


def test_user_records_stay_apart_from_the_fleet(
    session_factory: sessionmaker[Session], tmp_path: Path, matmul: Any
) -> None:
    ours, _ = _pair(session_factory, tmp_path)
    _commit_mix(ours, matmul)
    fleet = SqlDatabase(session_factory, target=TARGET, target_key=ours.target_key)
    assert len(fleet) == 0 and fleet.get_top_k(fleet.commit_workload(matmul), 5) == []
    with session_scope(session_factory) as s:
        wid = s.query(UserRecord.workload_id).first()[0]
        assert ranking.best_records(s, target_key=ours.target_key, workload_ids=[wid]) == []
        assert {o for (o,) in s.query(UserRecord.owner)} == {"alice@test"}


def test_one_target_per_instance(session_factory: sessionmaker[Session], tmp_path: Path, matmul: Any) -> None:
    ours, _ = _pair(session_factory, tmp_path)
    wl = ours.commit_workload(matmul)
    ours.commit_tuning_record(make_record(wl, split_trace(matmul, 4), [1e-3], target={"kind": "llvm", "num-cores": 1}))
    assert len(ours) == 0 and ours.get_top_k(wl, 5) == []
    assert len(Database(session_factory, target={"kind": "llvm", "num-cores": 1})) == 1
