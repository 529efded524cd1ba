"""The cost model's training rows: unflagged measurements of real schedules, not ad-hoc runs' empty traces."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from common.protocol import JobStatus
from db.engine import session_scope
from db.training_data import training_rows
from factories import SCHEDULE_TRACE, add_job, add_measurement, add_task, add_worker, add_workload


def test_rows_leave_out_flagged_results_and_traces_without_a_schedule(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        job = add_job(s, status=JobStatus.done)
        task = add_task(s, job=job, workload=add_workload(s))
        worker = add_worker(s, target_key=job.target_key)
        kept = add_measurement(s, task=task, worker=worker, trace_json=SCHEDULE_TRACE, run_secs=[2e-4])
        add_measurement(s, task=task, worker=worker, trace_json=SCHEDULE_TRACE, run_secs=[1e-4], flagged=True)
        add_measurement(s, task=task, worker=worker, trace_json="[[],[]]", run_secs=[3e-4])  # a FleetRunner ad-hoc run
        failed = add_measurement(s, task=task, worker=worker, trace_json=SCHEDULE_TRACE, run_secs=None, error="boom")
        key, expected = job.target_key, [kept.id, failed.id]
    with session_scope(session_factory) as s:
        assert [r.measurement_id for r in training_rows(s, target_key=key)] == expected
