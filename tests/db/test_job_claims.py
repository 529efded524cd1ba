"""Claiming jobs is a compare-and-set on the database's clock, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from db.engine import db_now, session_scope
from db.job_claims import claim_job, finish_job, job_heartbeat, job_status, release_job
from db.models import Job
from common.errors import BadInput
from common.protocol import CandidateState, JobStatus, MeasurementOutcome
from factories import add_job, add_measurement, add_task, add_worker, add_workload

KEY = '{"kind":"llvm"}'


def _job(factory: sessionmaker[Session], *, status: JobStatus = JobStatus.queued) -> int:
    with session_scope(factory) as s:
        return add_job(s, key=KEY, target={"kind": "llvm"}, status=status).id


def _row(factory: sessionmaker[Session], job_id: int) -> Job:
    with session_scope(factory) as s:
        job = s.get(Job, job_id)
        assert job is not None
        s.expunge(job)
        return job


def test_claim_heartbeat_finish(session_factory: sessionmaker[Session]) -> None:
    job_id = _job(session_factory)
    with session_scope(session_factory) as s:
        assert claim_job(s, owner="a", grace_s=10) == job_id
    job = _row(session_factory, job_id)
    assert (job.status, job.tuner_owner) == ("running", "a")
    assert job.started_at is not None and job.tuner_heartbeat_at is not None
    with session_scope(session_factory) as s:
        assert claim_job(s, owner="b", grace_s=10) is None  # fresh heartbeat: not claimable
        assert job_heartbeat(s, job_id=job_id, owner="a")
        assert not job_heartbeat(s, job_id=job_id, owner="b")
        with pytest.raises(BadInput):
            finish_job(s, job_id=job_id, owner="a", status=JobStatus.queued)
        assert not finish_job(s, job_id=job_id, owner="b", status=JobStatus.done)
        assert finish_job(s, job_id=job_id, owner="a", status=JobStatus.failed, error="RuntimeError('x')")
        assert not job_heartbeat(s, job_id=job_id, owner="a")  # finished: stop working on it
    job = _row(session_factory, job_id)
    assert (job.status, job.error) == ("failed", "RuntimeError('x')")
    assert job.finished_at is not None


def test_two_owners_one_wins(session_factory: sessionmaker[Session]) -> None:
    job_id = _job(session_factory)
    barrier = threading.Barrier(4)
    won: list[tuple[str, int | None]] = []

    def claim(owner: str) -> None:
        barrier.wait()
        with session_scope(session_factory) as s:
            won.append((owner, claim_job(s, owner=owner, grace_s=10)))

    threads = [threading.Thread(target=claim, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [owner for owner, got in won if got == job_id]
    assert len(winners) == 1 and all(got is None for owner, got in won if owner not in winners)
    assert _row(session_factory, job_id).tuner_owner == winners[0]


def test_stale_running_job_is_reclaimed_and_old_owner_learns_it(session_factory: sessionmaker[Session]) -> None:
    job_id = _job(session_factory)
    with session_scope(session_factory) as s:
        assert claim_job(s, owner="dead", grace_s=5) == job_id
        # The tuner went silent 6 s ago (a service restart mid-job).
        s.execute(update(Job).where(Job.id == job_id).values(tuner_heartbeat_at=db_now(s) - timedelta(seconds=6)))
    first_start = _row(session_factory, job_id).started_at
    with session_scope(session_factory) as s:
        assert claim_job(s, owner="new", grace_s=30) is None  # not stale under a longer grace
        assert claim_job(s, owner="new", grace_s=5) == job_id
    job = _row(session_factory, job_id)
    assert (job.status, job.tuner_owner, job.started_at) == ("running", "new", first_start)
    with session_scope(session_factory) as s:
        assert not job_heartbeat(s, job_id=job_id, owner="dead")
        assert not finish_job(s, job_id=job_id, owner="dead", status=JobStatus.done)


def test_a_tuner_never_reclaims_a_job_it_is_running(session_factory: sessionmaker[Session]) -> None:
    """A loaded machine delays the runner's own heartbeat past the grace: its daemon must not start a second runner."""
    job_id = _job(session_factory)
    with session_scope(session_factory) as s:
        assert claim_job(s, owner="busy", grace_s=5) == job_id
        s.execute(update(Job).where(Job.id == job_id).values(tuner_heartbeat_at=db_now(s) - timedelta(seconds=6)))
    with session_scope(session_factory) as s:
        assert claim_job(s, owner="busy", grace_s=5, exclude=[job_id]) is None
        assert job_heartbeat(s, job_id=job_id, owner="busy")  # the late heartbeat still holds the job
    with session_scope(session_factory) as s:
        s.execute(update(Job).where(Job.id == job_id).values(tuner_heartbeat_at=db_now(s) - timedelta(seconds=6)))
        assert claim_job(s, owner="other", grace_s=5, exclude=[]) == job_id  # another tuner may take it over


def test_release_and_cancel(session_factory: sessionmaker[Session]) -> None:
    first, second = _job(session_factory), _job(session_factory)
    with session_scope(session_factory) as s:
        assert claim_job(s, owner="a", grace_s=10) == first  # oldest first
        assert release_job(s, job_id=first, owner="a")
        assert job_status(s, job_id=first) == "queued"
        assert claim_job(s, owner="b", grace_s=10) == first  # at once, no grace period
        assert claim_job(s, owner="b", grace_s=10) == second
        s.execute(update(Job).where(Job.id == second).values(status="cancelled"))
        assert not job_heartbeat(s, job_id=second, owner="b")
        assert not finish_job(s, job_id=second, owner="b", status=JobStatus.done)
        assert job_status(s, job_id=second) == "cancelled"
        assert claim_job(s, owner="c", grace_s=10) is None  # cancelled jobs are never claimed
        assert job_status(s, job_id=10_000) is None


def test_what_the_tuner_reads(session_factory: sessionmaker[Session]) -> None:
    """load_job, job_candidates and fleet_best return plain records of the right rows."""
    from db.job_claims import fleet_best, job_candidates, load_job
    from db.queue import enqueue_candidates

    old_job, new_job = _job(session_factory), _job(session_factory)
    with session_scope(session_factory) as s:
        wl = add_workload(s, shash="123")
        worker = add_worker(s, target_key=KEY)
        old_task = add_task(s, job=s.get(Job, old_job), workload=wl, name="old")
        new_task = add_task(s, job=s.get(Job, new_job), workload=wl, name="new", weight=2)
        cands = {
            name: add_measurement(s, task=task, worker=worker, trace_json=f'"{name}"', run_secs=secs, error=error,
                                  round=1).candidate_id
            for name, task, secs, error in [("fast", old_task, [1e-5], None), ("slow", old_task, [2e-5, 4e-5], None),
                                            ("err", old_task, None, "crash"), ("mine", new_task, [5e-6], None)]
        }
        cands["waiting"] = enqueue_candidates(s, task_id=new_task.id, workload_id=wl.id, target_key=KEY,
                                              traces=['"waiting"'], round=1)[0]
        new_task_id = new_task.id
        wl_id = wl.id

    with session_scope(session_factory) as s:
        spec = load_job(s, job_id=new_job)
        assert [(t.name, t.weight, t.shash) for t in spec.tasks] == [("new", 2, "123")]
        assert (spec.trials, spec.trials_per_round, spec.status) == (8, 4, "queued")
        rows = {r.trace_json: r for r in job_candidates(s, job_id=new_job)}
        assert set(rows) == {'"mine"', '"waiting"'}
        assert rows['"mine"'].measured and rows['"mine"'].outcome == MeasurementOutcome(run_secs=[5e-6])
        assert not rows['"waiting"'].measured and rows['"waiting"'].state is CandidateState.pending
        assert [r.trace_json for r in job_candidates(s, job_id=new_job, candidate_ids=[cands["waiting"]])] == ['"waiting"']
        assert job_candidates(s, job_id=new_job, candidate_ids=[]) == []
        old = {r.trace_json: r for r in job_candidates(s, job_id=old_job)}
        assert old['"err"'].measured and old['"err"'].outcome.run_secs is None and old['"err"'].outcome.error == "crash"
        # Other tasks' valid measurements, fastest first; this task's own and errors left out.
        best = fleet_best(s, workload_id=wl_id, target_key=KEY, exclude_task_id=new_task_id, limit=5)
        assert [r.trace_json for r in best] == ['"fast"', '"slow"']
        assert best[1].outcome == MeasurementOutcome(run_secs=[2e-5, 4e-5])
        assert fleet_best(s, workload_id=wl_id, target_key='{"kind":"cuda"}', exclude_task_id=new_task_id, limit=5) == []
