"""The dashboard's read-only queries on SQLite and PostgreSQL (rows from tests/factories.py)."""

from __future__ import annotations

from datetime import timedelta

import factories
import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.protocol import Calibration, ErrorKind, JobStatus
from db import jobs as job_views
from db.ranking import best_records
from db import dashboard_queries as q
from db.engine import db_now, session_scope

ERRORS = {
    "build: TVMError: no such intrinsic": ErrorKind.build,
    "apply trace: ValueError: bad decision": ErrorKind.build,
    "build: cannot run here: cross-compiled": ErrorKind.unsupported,
    "wrong output: max abs diff 3.2": ErrorKind.wrong_output,
    "timeout: no result after 10 s": ErrorKind.timeout,
    "sandbox crashed: killed by SIGSEGV": ErrorKind.crash,
    "run: TVMError: device lost": ErrorKind.run,
    "reference run: TVMError: oops": ErrorKind.run,
}


def _job_with_tasks(s: Session, *, trials: int = 10, status: JobStatus = JobStatus.running):  # type: ignore[no-untyped-def]
    job = factories.add_job(s, trials=trials, status=status)
    a = factories.add_task(s, job=job, workload=factories.add_workload(s, flops=2e6), name="a", weight=2)
    b = factories.add_task(s, job=job, workload=factories.add_workload(s), name="b", weight=1)
    worker = factories.add_worker(s, target_key=job.target_key)
    return job, a, b, worker


def test_job_curves_totals_and_eta(session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    with session_scope(session_factory) as s:
        job, a, b, worker = _job_with_tasks(s)
        job.started_at = db_now(s) - timedelta(seconds=100)
        for secs, task in ((4e-3, a), (3e-3, a), (None, b), (2e-3, b), (5e-3, a)):
            m = factories.add_measurement(s, task=task, worker=worker, trace_json=factories.SCHEDULE_TRACE,
                                          run_secs=[secs] if secs else None, error=None if secs else "timeout: 10 s",
                                          error_kind=None if secs else ErrorKind.timeout)
            m.created_at = job.started_at + timedelta(seconds=10 * m.id)
        job_id = job.id
    with session_scope(session_factory) as s:
        detail = q.job_detail(s, job_id=job_id)
        api = job_views.job_public(s, job_id=job_id)
    assert [t.best_latency_s for t in detail.tasks] == [t.best_latency_s for t in api.tasks] == [3e-3, 2e-3]
    # Points where a best improved, plus the last trial (an error at 3 and a slower 5e-3 at 5 change nothing).
    assert [p.n for p in detail.curve] == [1, 2, 4, 5]
    assert [p.est_total_s for p in detail.curve] == [None, None, pytest.approx(8e-3), pytest.approx(8e-3)]
    assert [p.task_best_s for p in detail.curve] == [[4e-3, None], [3e-3, None], [3e-3, 2e-3], [3e-3, 2e-3]]
    assert [p.at_s for p in detail.curve] == sorted(p.at_s for p in detail.curve)
    assert detail.tasks[0].first_latency_s == 4e-3 and detail.tasks[0].speedup == pytest.approx(4 / 3)
    assert detail.tasks[0].share == pytest.approx(6 / 8)
    assert [t.n for t in detail.trials] == [5, 4, 3, 2, 1]  # newest first
    monkeypatch.setattr(q, "MAX_TRIALS", 2)
    with session_scope(session_factory) as s:
        capped = q.job_detail(s, job_id=job_id)
    assert [t.n for t in capped.trials] == [5, 4] and capped.curve == detail.curve  # curves still see every trial
    assert detail.trials[2].error_kind is ErrorKind.timeout and detail.trials[2].latency_s is None
    row = detail.job
    assert (row.trials_done, row.tasks_tuned, row.progress) == (5, 2, 0.5)
    assert row.est_total_s == pytest.approx(8e-3)
    # 5 trials in ~100 s: 5 more at that rate take ~100 s (the DB clock moved on a little since).
    assert row.eta_s == pytest.approx(row.elapsed_s, rel=1e-9) and 100 <= row.eta_s < 160


def test_jobs_overview_filters_and_eta_only_while_running(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        queued, *_ = _job_with_tasks(s, status=JobStatus.queued)
        done, a, _b, worker = _job_with_tasks(s, status=JobStatus.done)
        done.started_at, done.finished_at = db_now(s) - timedelta(seconds=50), db_now(s) - timedelta(seconds=20)
        factories.add_measurement(s, task=a, worker=worker, trace_json=factories.SCHEDULE_TRACE, run_secs=[1e-3])
        ids = queued.id, done.id
    with session_scope(session_factory) as s:
        rows = {r.id: r for r in q.jobs_overview(s)}
        only_done = q.jobs_overview(s, status=JobStatus.done)
    assert [r.id for r in only_done] == [ids[1]]
    assert rows[ids[0]].eta_s is None and rows[ids[0]].elapsed_s is None
    assert rows[ids[1]].eta_s is None and rows[ids[1]].elapsed_s == pytest.approx(30, abs=1)
    assert rows[ids[1]].est_total_s is None and rows[ids[1]].tasks_tuned == 1  # task b has no best yet


def test_workers_error_kinds_throughput_and_calibration(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        job, a, _b, worker = _job_with_tasks(s)
        idle = factories.add_worker(s, target_key=job.target_key, name="idle")
        idle.calibration_json = Calibration(status="degraded", ratio=1.8, samples=3).model_dump_json()
        for message in ERRORS:
            factories.add_measurement(s, task=a, worker=worker, trace_json=factories.SCHEDULE_TRACE, error=message, error_kind=ERRORS[message])
        for _ in range(2):
            factories.add_measurement(s, task=a, worker=worker, trace_json=factories.SCHEDULE_TRACE, run_secs=[1e-3])
        old = factories.add_measurement(s, task=a, worker=worker, trace_json=factories.SCHEDULE_TRACE, run_secs=[2e-3])
        old.created_at = db_now(s) - q.THROUGHPUT_WINDOW - timedelta(minutes=1)
        ids = worker.id, idle.id
    with session_scope(session_factory) as s:
        rows = {r.id: r for r in q.workers_overview(s)}
    busy, quiet = rows[ids[0]], rows[ids[1]]
    expected: dict[ErrorKind, int] = {}
    for message, kind in ERRORS.items():
        expected[kind] = expected.get(kind, 0) + 1
    assert busy.errors == expected
    assert (busy.measurements, busy.valid) == (len(ERRORS) + 3, 3)
    assert busy.error_rate == pytest.approx(len(ERRORS) / (len(ERRORS) + 3))
    assert busy.per_minute == pytest.approx((len(ERRORS) + 2) / 10)  # the old one is outside the window
    assert quiet.measurements == 0 and quiet.error_rate == 0 and quiet.errors == {}
    assert quiet.calibration is not None and quiet.calibration.status == "degraded"
    assert busy.suspect is None  # no suspect flag in this schema


def test_workloads_per_target_use_the_catalog_best(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        job, a, b, worker = _job_with_tasks(s)
        other = factories.add_job(s, model=factories.add_model(s, name="zeta"), trials=4)
        factories.add_task(s, job=other, workload=a.workload, name="a")
        for secs in (3e-3, 1e-3):
            factories.add_measurement(s, task=a, worker=worker, trace_json=factories.SCHEDULE_TRACE, run_secs=[secs])
        factories.add_measurement(s, task=a, worker=worker, trace_json=factories.SCHEDULE_TRACE, error="build: nope")
        key, wa, wb = job.target_key, a.workload_id, b.workload_id
    with session_scope(session_factory) as s:
        rows = {r.id: r for r in q.workloads_for_target(s, target_key=key)}
        best = {r.workload_id: r for r in best_records(s, target_key=key, workload_ids=[wa, wb])}
        assert q.targets(s) == [key]
        assert q.workloads_for_target(s, target_key="no-such-target") == []
    assert set(rows) == {wa, wb}
    assert (rows[wa].measurements, rows[wa].valid) == (3, 2)
    assert rows[wa].best_latency_s == best[wa].mean_secs == 1e-3
    assert rows[wa].best_candidate_id == best[wa].candidate_id
    assert rows[wa].gflops == pytest.approx(2e6 / 1e-3 / 1e9)
    assert rows[wa].models == ["m", "zeta"] and rows[wb].models == ["m"]  # "m": factories' default model name
    assert rows[wb].best_latency_s is None and rows[wb].measurements == 0


def test_unknown_job_is_not_found(session_factory: sessionmaker[Session]) -> None:
    from common.errors import NotFound

    with session_scope(session_factory) as s, pytest.raises(NotFound, match="job 999 does not exist"):
        q.job_detail(s, job_id=999)
