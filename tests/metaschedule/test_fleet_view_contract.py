"""The fleet's MetaSchedule view (``db.ms_database.SqlDatabase``) beside a ``JSONDatabase`` with the same records.

The fleet's measurements are written as the queue writes them; the same
records are committed to a ``JSONDatabase``; every read of TVM's ``Database``
contract is compared, on SQLite and PostgreSQL. Validity is TVM's
``TuningRecord::IsValid`` (the all-1e10 record and the empty trace are dropped,
a partly-1e10 record is kept at its mean). The one deliberate difference is
``db.ranking``'s policy for flagged results: they rank after every unflagged
one, so the expected top-k is the JSONDatabase's with flagged records moved
last. Ad-hoc runs of users' scripts on the same workload never show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tvm
from conftest import TARGET, empty_trace, make_record, split_trace, view, views
from factories import add_job, add_measurement, add_task, add_worker, add_workload
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from tvm.s_tir import meta_schedule as ms

from common.protocol import CandidateResult
from common.tvm_json import args_info_json, trace_to_json, workload_hash, workload_to_json
from db import adhoc_runs, queue, ranking
from db.engine import session_scope
from db.confirmation import ConfirmPolicy
from db.models import Candidate, Measurement, Workload
from db.ms_database import SqlDatabase
from tunehub.metaschedule import Database

# (trace: split factor, -1 for the empty trace; run_secs, None for an error; flagged), in commit order.
Row = tuple[int, list[float] | None, bool]
MIX: list[Row] = [
    (2, [3.0e-3], False),
    (4, [1e10], False),  # TVM's failed stub: invalid
    (8, [2e10], False),  # above the stub but not it: valid for TVM
    (16, [1e10, 1e10], False),  # every run the stub: invalid
    (2, None, False),  # an error: run_secs None, invalid
    (-1, [5e-4], False),  # empty trace: invalid (what an ad-hoc run stores)
    (4, [1.0e-3], False),
    (8, [1.0e-3], False),  # tie with the one above: commit order decides
    (0, [1e10, 2.0e-3], False),  # one real run among stubs: valid, at its mean
    (16, [6.0e-3], True),  # flagged, slowest of the real times: same place as in TVM
    (1, [2.0e-4], True),  # flagged and fastest: last by the policy, first in TVM
    (1, [1e10], True),  # flagged and invalid: dropped as in TVM
]


def _trace(mod: Any, factor: int) -> Any:
    return empty_trace(mod) if factor < 0 else split_trace(mod, factor)


def _fleet(session_factory: sessionmaker[Session], mod: Any, rows: list[Row]) -> tuple[SqlDatabase, set[Any]]:
    """The rows as the fleet's measurements of one finished job; returns the view and the flagged records' views."""
    with session_scope(session_factory) as s:
        job = add_job(s)
        task = add_task(s, job=job, workload=add_workload(s, mod=mod))
        worker = add_worker(s, target_key=job.target_key)
        for factor, secs, flagged in rows:
            add_measurement(s, task=task, worker=worker, trace_json=trace_to_json(_trace(mod, factor)), run_secs=secs,
                            error=None if secs is not None else "RuntimeError: crashed", flagged=flagged)
        key = job.target_key
    fleet = SqlDatabase(session_factory, target=TARGET, target_key=key)
    wl = ms.database.Workload(mod)
    flagged_views = {_key(view(make_record(wl, _trace(mod, f), secs))) for f, secs, fl in rows if fl}
    return fleet, flagged_views


def _json(tmp_path: Path, mod: Any, rows: list[Row]) -> Any:
    (tmp_path / "json").mkdir(exist_ok=True)
    theirs = ms.database.JSONDatabase(work_dir=str(tmp_path / "json"))
    wl = theirs.commit_workload(mod)
    for factor, secs, _ in rows:
        theirs.commit_tuning_record(make_record(wl, _trace(mod, factor), secs))
    return theirs


def _key(v: Any) -> Any:
    return v[0], None if v[1] is None else tuple(v[1]), v[2]


def _policy(records: list[Any], flagged: set[Any]) -> list[Any]:
    """TVM's order with flagged records moved after every unflagged one (``db.ranking``)."""
    seen = views(records)
    return [v for v in seen if _key(v) not in flagged] + [v for v in seen if _key(v) in flagged]


def _same(fleet: Any, theirs: Any, mod: Any, flagged: set[Any]) -> None:
    assert len(fleet) == len(theirs)
    assert views(fleet.get_all_tuning_records()) == views(theirs.get_all_tuning_records())
    assert fleet.has_workload(mod) and theirs.has_workload(mod)
    wl_f, wl_t = fleet.commit_workload(mod), theirs.commit_workload(mod)
    ordered = _policy(theirs.get_top_k(wl_t, 100), flagged)
    for k in (0, 1, 2, 3, 5, 100):
        assert views(fleet.get_top_k(wl_f, k)) == ordered[:k], k
    target = tvm.target.Target(TARGET)
    best = fleet.query_tuning_record(mod, target, "main")
    assert (best is None) == (not ordered) and (best is None or view(best) == ordered[0])
    if best is not None:
        sch = tvm.s_tir.Schedule(mod)
        best.trace.apply_to_schedule(sch, remove_postproc=False)
        tvm.ir.assert_structural_equal(fleet.query_schedule(mod, target, "main").mod, sch.mod)
        tvm.ir.assert_structural_equal(fleet.query_ir_module(mod, target, "main"), sch.mod)


def test_validity_and_order_match_json_database(
    session_factory: sessionmaker[Session], tmp_path: Path, matmul: Any
) -> None:
    fleet, flagged = _fleet(session_factory, matmul, MIX)
    theirs = _json(tmp_path, matmul, MIX)
    _same(fleet, theirs, matmul, flagged)
    top = fleet.get_top_k(fleet.commit_workload(matmul), 100)
    assert [view(r)[1] for r in top] == [[1.0e-3], [1.0e-3], [3.0e-3], [1e10, 2.0e-3], [2e10], [2.0e-4], [6.0e-3]]
    assert len(fleet) == len(MIX)


def test_flagged_only_agrees_where_the_policy_has_nothing_to_reorder(
    session_factory: sessionmaker[Session], tmp_path: Path, matmul: Any
) -> None:
    rows = [(2, [3.0e-3], True), (4, [1e10], True), (-1, [1e-4], True), (8, [1.0e-3], True)]
    fleet, flagged = _fleet(session_factory, matmul, rows)
    theirs = _json(tmp_path, matmul, rows)
    _same(fleet, theirs, matmul, flagged)
    assert views(fleet.get_top_k(fleet.commit_workload(matmul), 5)) == views(
        theirs.get_top_k(theirs.commit_workload(matmul), 5))


def test_adhoc_runs_are_not_fleet_records(session_factory: sessionmaker[Session], tmp_path: Path, matmul: Any) -> None:
    """A user's script measuring the unscheduled module on the fleet (``FleetRunner``) adds no record to the view.

    Nor is its fast result sent for confirmation (``db.confirmation``): it is no record, so it is never served.
    """
    rows = [(2, [3.0e-3], False), (4, [1.0e-3], False)]
    fleet, flagged = _fleet(session_factory, matmul, rows)
    with session_scope(session_factory) as s:
        module = adhoc_runs.AdhocModule(shash=workload_hash(matmul), mod_json=workload_to_json(matmul),
                                        args_info_json=args_info_json(matmul))
        key = fleet._target_key
        job_id, cids = adhoc_runs.create_run(s, target_json=json.dumps(TARGET),
                                             target_key=key, modules=[module, module], owner="bob@test")
        worker = add_worker(s, target_key=key, name="adhoc-worker")
        lease, leased = queue.lease_candidates(s, worker_id=worker.id, target_key=key, max_count=8, ttl_s=60)
        assert lease is not None and sorted(c.id for c in leased) == sorted(cids)
        queue.complete(s, lease_id=lease.id, worker_id=worker.id, confirm=ConfirmPolicy(), results=[
            CandidateResult(candidate_id=cids[0], run_secs=[1e-5]),
            CandidateResult(candidate_id=cids[1], error="RuntimeError: crashed"),
        ])
        # faster than anything, with a peer worker on the key: still not re-measured, it can never be served
        assert s.scalar(select(func.count()).select_from(Candidate).where(
            Candidate.confirms_measurement_id.is_not(None))) == 0
        adhoc_runs.close_run(s, job_id=job_id)
        assert [r.run_secs for r in adhoc_runs.run_results(s, candidate_ids=cids)] == [[1e-5], None]
        wid = s.scalar(select(Workload.id).where(Workload.shash == workload_hash(matmul)))
        assert [b.mean_secs for b in ranking.best_records(s, target_key=key, workload_ids=[wid])] == [1.0e-3]
    _same(fleet, _json(tmp_path, matmul, rows), matmul, flagged)


def test_the_view_is_read_only_and_users_commit_through_database(
    session_factory: sessionmaker[Session], matmul: Any
) -> None:
    fleet, _ = _fleet(session_factory, matmul, [(2, [3.0e-3], False)])
    record = make_record(fleet.commit_workload(matmul), split_trace(matmul, 4), [1e-4])
    with pytest.raises(TypeError, match=r"tunehub\.metaschedule\.Database"):
        fleet.commit_tuning_record(record)
    assert len(fleet) == 1
    ours = Database(session_factory, target=TARGET, owner="carol@test")
    ours.commit_tuning_record(record)
    assert len(ours) == 1 and view(ours.get_top_k(ours.commit_workload(matmul), 1)[0]) == view(record)
    assert len(fleet) == 1  # a user's record never becomes a fleet measurement


def test_the_search_ranks_only_its_own_tvm_version(session_factory: sessionmaker[Session], matmul: Any) -> None:
    """A faster record measured under another TVM version is not what the search builds on."""
    fleet, _ = _fleet(session_factory, matmul, [(2, [3.0e-3], False), (4, [1.0e-3], False)])
    with session_scope(session_factory) as s:
        ours, other = s.scalars(select(Measurement).order_by(Measurement.id)).all()[-2:]
        ours.tvm_version, other.tvm_version = "0.27.0", "0.19.0"
    current = SqlDatabase(session_factory, target=TARGET, target_key=fleet._target_key, tvm_version="0.27.0")
    wl = fleet.commit_workload(matmul)
    def firsts(records: list[Any]) -> list[float]:
        return [round(float(r.run_secs[0]) * 1e3, 3) for r in records]

    assert firsts(fleet.get_top_k(wl, 2)) == [1.0, 3.0]
    assert firsts(current.get_top_k(current.commit_workload(matmul), 2)) == [3.0]
