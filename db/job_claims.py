"""The tuner's side of jobs: claiming, heartbeats, finishing, and what it reads.

A job is run by one tuner process at a time. Claiming is a compare-and-set
(Optuna's habit): a candidate row is read, then ``UPDATE ... WHERE`` the
status, owner and heartbeat are still what was read; one row updated means this
owner won, zero means another tuner got there first. On PostgreSQL the read is
``FOR UPDATE SKIP LOCKED`` so concurrent claimers skip each other's rows instead
of queueing behind them; SQLite serialises writers (``BEGIN IMMEDIATE``).

A running job whose ``tuner_heartbeat_at`` is older than the grace period has a
dead tuner (a service restart mid-job) and is claimed again; the new owner
resumes it from what the database holds (``tuner.job_runner``). Every time here
is the database's clock (``db.engine.db_now``).

All functions are keyword-only, run inside the caller's ``session_scope`` and
return plain values or the frozen records below, never ORM objects.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from db.engine import db_now
from db.models import Candidate, Job, Measurement, Task, Workload
from db.ranking import ranked_measurements
from common.errors import BadInput, NotFound
from common.protocol import CandidateState, ErrorKind, JobStatus, MeasurementOutcome

# The stored values, for SQL; records carry JobStatus (a str enum, equal to these).
QUEUED = JobStatus.queued.value
RUNNING = JobStatus.running.value
FINISHED = (JobStatus.done.value, JobStatus.failed.value)

# How many claimable rows one claim looks at before giving up on this poll.
_CLAIM_SCAN = 8


def _same(column, value):  # type: ignore[no-untyped-def]
    """Null-safe equality for the compare-and-set."""
    return column.is_(None) if value is None else column == value


def claim_job(session: Session, *, owner: str, grace_s: float, exclude: Collection[int] = ()) -> int | None:
    """Take one job for ``owner``; returns its id, or None when nothing is claimable.

    Claimable: ``queued``, or ``running`` with a heartbeat older than ``grace_s``
    (or none), and not in ``exclude`` — the jobs the caller is running now: on a
    loaded machine its own heartbeat can fall behind the grace, and claiming such
    a job again would start a second runner under the same owner. The claim sets
    status ``running``, the owner, a fresh heartbeat and ``started_at`` if unset.
    Oldest job first.
    """
    now = db_now(session)
    stale_before = now - timedelta(seconds=grace_s)
    claimable = or_(
        Job.status == QUEUED,
        and_(
            Job.status == RUNNING,
            or_(Job.tuner_heartbeat_at.is_(None), Job.tuner_heartbeat_at < stale_before),
        ),
    )
    if exclude:
        claimable = and_(claimable, Job.id.not_in(list(exclude)))
    rows = session.execute(
        select(Job.id, Job.status, Job.tuner_owner, Job.tuner_heartbeat_at, Job.started_at)
        .where(claimable)
        .order_by(Job.id)
        .limit(_CLAIM_SCAN)
        .with_for_update(skip_locked=True)
    ).all()
    for job_id, status, old_owner, old_beat, started_at in rows:
        won = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == status,
                _same(Job.tuner_owner, old_owner),
                _same(Job.tuner_heartbeat_at, old_beat),
            )
            .values(
                status=RUNNING,
                tuner_owner=owner,
                tuner_heartbeat_at=now,
                started_at=started_at or now,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if won == 1:
            return int(job_id)
    return None


def job_heartbeat(session: Session, *, job_id: int, owner: str) -> bool:
    """Stamp the job as alive; False when it was cancelled, finished or taken by another owner.

    False means: stop working on this job now.
    """
    won = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.tuner_owner == owner, Job.status == RUNNING)
        .values(tuner_heartbeat_at=db_now(session))
        .execution_options(synchronize_session=False)
    ).rowcount
    return won == 1


def finish_job(
    session: Session, *, job_id: int, owner: str, status: JobStatus, error: str | None = None
) -> bool:
    """Mark a running job ``done`` or ``failed``; False when ``owner`` no longer holds it.

    A job cancelled (or reclaimed) meanwhile keeps the status it has: finishing is a
    compare-and-set on (job, owner, running).
    """
    if status not in FINISHED:
        raise BadInput(f"a tuner finishes a job as done or failed, not {status!r}")
    won = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.tuner_owner == owner, Job.status == RUNNING)
        .values(status=JobStatus(status).value, error=error[:8000] if error else None, finished_at=db_now(session))
        .execution_options(synchronize_session=False)
    ).rowcount
    return won == 1


def release_job(session: Session, *, job_id: int, owner: str) -> bool:
    """Hand a running job back to the queue (a tuner shutting down cleanly).

    Another tuner claims it at once instead of waiting out the grace period, and
    resumes it. False when ``owner`` no longer holds it.
    """
    won = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.tuner_owner == owner, Job.status == RUNNING)
        .values(status=QUEUED, tuner_owner=None, tuner_heartbeat_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    return won == 1


def job_status(session: Session, *, job_id: int) -> JobStatus | None:
    """The job's status, or None when no such job exists."""
    status = session.scalar(select(Job.status).where(Job.id == job_id))
    return None if status is None else JobStatus(status)


# --- what the tuner reads -------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """One task of a job, with its workload as TVM JSON."""

    id: int
    name: str
    weight: int
    workload_id: int
    shash: str
    mod_json: str
    args_info_json: str
    flops: float | None = None


@dataclass(frozen=True)
class JobSpec:
    """What a tuner needs to run a job."""

    id: int
    status: JobStatus
    target_json: str
    target_key: str
    trials: int
    trials_per_round: int
    tuner_owner: str | None
    tasks: tuple[TaskSpec, ...]
    retune: bool = False


@dataclass(frozen=True)
class CandidateOutcome:
    """A candidate of a job and, once measured, its result (``outcome``; None while unmeasured)."""

    candidate_id: int
    task_id: int
    trace_json: str
    round: int
    state: CandidateState
    outcome: MeasurementOutcome | None

    @property
    def measured(self) -> bool:
        return self.outcome is not None


def _stored_outcome(
    run_secs_json: str | None, error: str | None, error_kind: str | None, flagged: bool
) -> MeasurementOutcome:
    """A measurement row as the shared outcome record (a row with neither field reads as a run error)."""
    if run_secs_json:
        return MeasurementOutcome(run_secs=[float(s) for s in json.loads(run_secs_json)], flagged=bool(flagged))
    kind = ErrorKind(error_kind) if error_kind else None
    return MeasurementOutcome(error=error or "measured without run_secs or error", error_kind=kind)


def load_job(session: Session, *, job_id: int) -> JobSpec:
    """The job and its tasks (ordered by task id); NotFound when it does not exist."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    rows = session.execute(
        select(Task.id, Task.name, Task.weight, Workload.id, Workload.shash, Workload.mod_json, Workload.args_info_json,
               Workload.flops)
        .join(Workload, Workload.id == Task.workload_id)
        .where(Task.job_id == job_id)
        .order_by(Task.id)
    ).all()
    tasks = tuple(TaskSpec(*row) for row in rows)
    return JobSpec(
        id=job.id,
        status=JobStatus(job.status),
        target_json=job.target_json,
        target_key=job.target_key,
        trials=job.trials,
        trials_per_round=job.trials_per_round,
        tuner_owner=job.tuner_owner,
        tasks=tasks,
        retune=bool(job.retune),
    )


def job_candidates(
    session: Session, *, job_id: int, candidate_ids: Sequence[int] | None = None
) -> list[CandidateOutcome]:
    """Candidates of the job's tasks with their measurements, by candidate id.

    ``candidate_ids`` narrows the answer to those candidates (polling one round).
    """
    query = (
        select(
            Candidate.id,
            Candidate.task_id,
            Candidate.trace_json,
            Candidate.round,
            Candidate.state,
            Measurement.id,
            Measurement.run_secs_json,
            Measurement.error,
            Measurement.error_kind,
            Measurement.flagged,
        )
        .join(Task, Task.id == Candidate.task_id)
        .outerjoin(Measurement, Measurement.candidate_id == Candidate.id)
        .where(Task.job_id == job_id, Candidate.confirms_measurement_id.is_(None))  # not the tuner's: db.confirmation
        .order_by(Candidate.id)
    )
    if candidate_ids is not None:
        if not candidate_ids:
            return []
        query = query.where(Candidate.id.in_(list(candidate_ids)))
    out = []
    for cid, task_id, trace_json, rnd, state, mid, run_secs_json, error, error_kind, flagged in session.execute(query):
        outcome = None if mid is None else _stored_outcome(run_secs_json, error, error_kind, flagged)
        out.append(CandidateOutcome(cid, task_id, trace_json, rnd, CandidateState(state), outcome))
    return out


def fleet_best(
    session: Session, *, workload_id: int, target_key: str, exclude_task_id: int, limit: int,
    tvm_version: str | None = None,
) -> list[CandidateOutcome]:
    """The best measurements (``db.ranking`` policy) of a workload on a target key made by other tasks.

    A new or resumed search warms its cost model with them and does not measure them again.
    ``tvm_version``: only measurements made under it (``db.ranking``).
    """
    ranked = ranked_measurements(
        session, target_key=target_key, workload_ids=[workload_id], per_workload=limit,
        exclude_task_id=exclude_task_id, tvm_version=tvm_version,
    ).get(workload_id, [])
    return [
        CandidateOutcome(
            candidate_id=m.candidate_id,
            task_id=m.task_id,
            trace_json=m.trace_json,
            round=m.round,
            state=CandidateState(m.state),
            outcome=MeasurementOutcome(run_secs=list(m.run_secs), flagged=m.flagged),
        )
        for m in ranked
    ]


def tuned_workloads(
    session: Session, *, workload_ids: Sequence[int], target_key: str, exclude_job_id: int,
    tvm_version: str | None = None,
) -> dict[int, float]:
    """Workloads already tuned for a target key: {workload id: its best's mean seconds}.

    Tuned means a finished (``done``) job other than ``exclude_job_id`` measured a valid
    schedule for it on that key; a job that is still running does not count, so two
    concurrent jobs on one workload both tune it. The best is by the ``db.ranking`` policy;
    ``tvm_version``: only measurements made under it.
    """
    ranked = ranked_measurements(
        session, target_key=target_key, workload_ids=workload_ids, done_jobs_except=exclude_job_id,
        tvm_version=tvm_version,
    )
    return {wid: best[0].mean_secs for wid, best in ranked.items()}
