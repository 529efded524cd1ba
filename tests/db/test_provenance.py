"""A measurement's provenance as the queue stores it: the worker's TVM version, transferred schedules, trials."""

from __future__ import annotations

import json

from sqlalchemy.orm import Session, sessionmaker

from common.protocol import Calibration, CandidateResult
from db import provenance, queue, workers
from db.engine import session_scope
from factories import add_job, add_task, add_worker, add_workload


def test_queue_stamps_version_and_transfer_and_provenance_reads_them(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        wl = add_workload(s)
        job = add_job(s)
        task = add_task(s, job=job, workload=wl)
        worker = add_worker(s, target_key=job.target_key, name="bench-1")
        worker.hardware_json = json.dumps({"cpu": "EPYC", "tvm": "0.27.0.post1"})
        key, ids = job.target_key, (job.id, task.id, wl.id, worker.id)
    job_id, task_id, wl_id, worker_id = ids
    with session_scope(session_factory) as s:
        adapted, searched = queue.enqueue_candidates(s, task_id=task_id, workload_id=wl_id, target_key=key,
                                                     traces=['["a"]', '["b"]'], round=3, transferred=[True, False])
        lease, _ = queue.lease_candidates(s, worker_id=worker_id, target_key=key, max_count=2, ttl_s=60)
        assert lease is not None
        queue.complete(s, lease_id=lease.id, worker_id=worker_id, tvm_version="0.27.0.post1", results=[
            CandidateResult(candidate_id=adapted, run_secs=[1e-3]),
            CandidateResult(candidate_id=searched, error="no answer", error_kind="timeout"),
        ])
        workers.set_worker_calibration(s, worker_id=worker_id, calibration=Calibration(status="ok", ratio=1.02))
    with session_scope(session_factory) as s:
        assert provenance.measured_workloads(s, target_key=key) == [wl_id]
        mids = [m.id for m in queue.measurements_for(s, candidate_ids=[adapted, searched]).values()]
        stamps = provenance.record_provenance(s, target_key=key, measurement_ids=mids)
    by_candidate = {p.candidate_id: p for p in stamps.values()}
    first, second = by_candidate[adapted], by_candidate[searched]
    assert first.transferred is True and second.transferred is False
    assert first.tvm_version == second.tvm_version == "0.27.0.post1"
    assert first.job_id == job_id and first.round == 3
    assert first.trials == 2 and first.valid_trials == 1
    (stamp,) = first.workers
    assert (stamp.id, stamp.name, stamp.role, stamp.cpu, stamp.tvm_version) == (
        worker_id, "bench-1", "measured", "EPYC", "0.27.0.post1")
    assert stamp.calibration is not None and stamp.calibration["status"] == "ok"
    assert json.loads(json.dumps(first.as_dict()))["measured_at"] == first.measured_at.isoformat()
