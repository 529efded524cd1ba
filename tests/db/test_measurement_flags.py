"""Flagged measurements and worker calibration, on SQLite and PostgreSQL.

A result measured on a degraded or disturbed worker is stored with all its
repeats and ``flagged``; the best config ranks it after every unflagged one
(``db.ranking``); the worker's last calibration is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from factories import SCHEDULE_TRACE
from sqlalchemy.orm import Session, sessionmaker

from db import jobs, queue, ranking, uploads, workers, workloads
from db.engine import session_scope
from db.models import Measurement
from common.protocol import Calibration, CandidateResult

KEY = '{"keys":["cpu"],"kind":"llvm","num-cores":2}'


@dataclass(frozen=True)
class _Wl:
    shash: str
    mod_json: str = "{}"
    args_info_json: str = "[]"
    flops: float | None = None


def _setup(factory: sessionmaker[Session], n: int) -> tuple[int, int, int, list[int], int]:
    """(workload id, worker id, lease id, candidate ids, task id) with ``n`` candidates leased."""
    with session_scope(factory) as s:
        model, _ = uploads.store_model(s, name="m", content=b"onnx-flags", input_shapes={})
        wid = workloads.upsert_workloads(s, extracted=[_Wl("777")])["777"]
        job = jobs.create_job(
            s, model_id=model.id, target_json={"kind": "llvm"}, target_key=KEY, trials=n, trials_per_round=n,
            tasks=[("t", 1, wid)],
        )
        task_id = jobs.job_public(s, job_id=job).tasks[0].id
        worker = workers.register_worker(
            s, name="w", token_id=None, hardware={}, target_json={"kind": "llvm"}, target_key=KEY
        ).id
        cids = queue.enqueue_candidates(s, task_id=task_id, workload_id=wid, target_key=KEY, traces=[SCHEDULE_TRACE] * n, round=0)
        lease, _ = queue.lease_candidates(s, worker_id=worker, target_key=KEY, max_count=n, ttl_s=60)
        assert lease is not None
        return wid, worker, lease.id, cids, task_id


def test_flags_are_stored_and_ranked_last(session_factory: sessionmaker[Session]) -> None:
    wid, worker, lease, (a, b, c, d), _ = _setup(session_factory, 4)
    with session_scope(session_factory) as s:
        # a: flagged and 3 % faster than b -> b (unflagged) wins.
        queue.complete(s, lease_id=lease, worker_id=worker, results=[
            CandidateResult(candidate_id=a, run_secs=[0.97e-3, 0.97e-3], flagged=True),
            CandidateResult(candidate_id=b, run_secs=[1.0e-3, 1.0e-3]),
            CandidateResult(candidate_id=c, error="wrong output: buffer C", flagged=True),  # errors are never flagged
        ])
    with session_scope(session_factory) as s:
        rows = {m.candidate_id: m for m in s.scalars(select(Measurement))}
        assert rows[a].flagged and not rows[b].flagged and not rows[c].flagged
        assert rows[a].run_secs_json == "[0.00097, 0.00097]"  # all repeats kept
        top = ranking.best_records(s, target_key=KEY, workload_ids=[wid])
        assert [r.candidate_id for r in top] == [b]
    with session_scope(session_factory) as s:
        # d: flagged through the report's degraded calibration: even twice as fast, it ranks after b.
        plain = CandidateResult(candidate_id=d, run_secs=[0.5e-3])  # the result itself says nothing
        queue.complete(s, lease_id=lease, worker_id=worker, results=[plain], flag_all=True)
    with session_scope(session_factory) as s:
        assert s.scalars(select(Measurement.flagged).where(Measurement.candidate_id == d)).one() is True
        assert [r.candidate_id for r in ranking.best_records(s, target_key=KEY, workload_ids=[wid])] == [b]
        ranked = ranking.ranked_measurements(s, target_key=KEY, workload_ids=[wid], per_workload=5)[wid]
        assert [m.candidate_id for m in ranked] == [b, d, a]


def test_worker_calibration_is_kept(session_factory: sessionmaker[Session]) -> None:
    _, worker, _, _, _ = _setup(session_factory, 1)
    cal = Calibration(status="degraded", ratio=1.8, baseline_s=1e-3, latest_s=1.8e-3, tolerance=1.3, samples=4)
    with session_scope(session_factory) as s:
        assert workers.list_workers(s)[0].calibration is None
        workers.set_worker_calibration(s, worker_id=worker, calibration=cal)
    with session_scope(session_factory) as s:
        assert workers.list_workers(s)[0].calibration == cal
