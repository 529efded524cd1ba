"""Jobs as users see them: creating one with its tasks, progress, listing, cancelling.

Functions are keyword-only, take the caller's session and never commit. The
tuner's side of a job (claiming, heartbeats, finishing) is ``db.job_claims``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, defer

from common.errors import BadInput, Conflict, NotFound
from common.protocol import JobEndReason, JobPublic, JobStatus, TaskPublic, TaskReason
from db import queue
from db.engine import as_utc, db_now
from db.models import Candidate, Job, Measurement, Model, Task, Workload
from db.ranking import task_bests



def create_job(
    session: Session,
    *,
    model_id: int,
    target_json: dict[str, Any] | str,
    target_key: str,
    trials: int,
    trials_per_round: int,
    tasks: Sequence[tuple[str, int, int]],
    retune: bool = False,
    time_budget_s: float | None = None,
    owner_token_id: int | None = None,
) -> int:
    """A queued job and its tasks ``(name, weight, workload_id)``; returns the job id.

    The tuner picks queued jobs up from the database; nothing runs here. Two
    tasks on one workload (a hash shared by two fused ops) become one task with
    the weights summed, as MetaSchedule's own extraction does.
    """
    if not tasks:
        raise BadInput("the model has no operators to tune")
    merged: dict[int, tuple[str, int]] = {}
    for name, weight, workload_id in tasks:
        first_name, w = merged.get(workload_id, (name, 0))
        merged[workload_id] = (first_name, w + int(weight))
    text = target_json if isinstance(target_json, str) else json.dumps(target_json, sort_keys=True)
    job = Job(
        model_id=model_id,
        target_json=text,
        target_key=target_key,
        trials=trials,
        trials_per_round=trials_per_round,
        retune=retune,
        time_budget_s=time_budget_s,
        owner_token_id=owner_token_id,
        status=JobStatus.queued.value,
        created_at=db_now(session),
    )
    session.add(job)
    session.flush()
    session.add_all(
        Task(job_id=job.id, workload_id=wid, name=name[:300], weight=weight) for wid, (name, weight) in merged.items()
    )
    session.flush()
    return job.id


def job_public(session: Session, *, job_id: int) -> JobPublic:
    """A job with per-task progress; NotFound names the id."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return _jobs_public(session, [job])[0]


def list_jobs(
    session: Session,
    *,
    model_id: int | None = None,
    status: JobStatus | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[JobPublic]:
    """Newest first, each with its tasks' progress (three queries in all, whatever the count)."""
    q = select(Job).order_by(Job.id.desc()).limit(limit).offset(offset)
    if model_id is not None:
        q = q.where(Job.model_id == model_id)
    if status is not None:
        q = q.where(Job.status == JobStatus(status).value)
    return _jobs_public(session, list(session.scalars(q)))


def _jobs_public(session: Session, jobs: Sequence[Job]) -> list[JobPublic]:
    """Progress of many jobs from one aggregate query over their tasks' measurements."""
    if not jobs:
        return []
    job_ids = [j.id for j in jobs]
    task_ids = select(Task.id).where(Task.job_id.in_(job_ids))
    stats = (
        select(
            Candidate.task_id.label("task_id"),
            func.count(Measurement.id).label("done"),
            func.count(Measurement.mean_secs).label("valid"),
        )
        .join(Measurement, Measurement.candidate_id == Candidate.id)
        .where(Candidate.task_id.in_(task_ids), Candidate.confirms_measurement_id.is_(None))  # trials, not re-checks
        .group_by(Candidate.task_id)
        .subquery()
    )
    rows = session.execute(
        select(
            Task.id,
            Task.job_id,
            Task.name,
            Task.weight,
            Task.share,
            Task.why,
            Workload.shash,
            Workload.flops,
            stats.c.done,
            stats.c.valid,
        )
        .join(Workload, Workload.id == Task.workload_id)
        .outerjoin(stats, stats.c.task_id == Task.id)
        .where(Task.job_id.in_(job_ids))
        .order_by(Task.id)
    )
    rows = rows.all()
    bests = task_bests(session, task_ids=[r.id for r in rows])  # the one "best" (db.ranking), per task
    tasks: dict[int, list[TaskPublic]] = {jid: [] for jid in job_ids}
    for r in rows:
        tasks[r.job_id].append(
            TaskPublic(
                id=r.id,
                name=r.name,
                workload_hash=r.shash,
                weight=r.weight,
                flops=r.flops,
                trials_done=r.done or 0,
                trials_valid=r.valid or 0,
                best_latency_s=bests.get(r.id),
                share=r.share,
                why=TaskReason(r.why) if r.why else None,
            )
        )
    return [
        JobPublic(
            id=j.id,
            model_id=j.model_id,
            status=JobStatus(j.status),
            target=json.loads(j.target_json),
            target_key=j.target_key,
            trials=j.trials,
            trials_done=sum(t.trials_done for t in tasks[j.id]),
            error=j.error,
            created_at=as_utc(j.created_at),
            started_at=as_utc(j.started_at),
            finished_at=as_utc(j.finished_at),
            time_budget_s=j.time_budget_s,
            end_reason=JobEndReason(j.end_reason) if j.end_reason else None,
            estimated_latency_s=j.estimated_latency_s,
            cost_model=j.cost_model,
            tasks=tasks[j.id],
        )
        for j in jobs
    ]


def job_owner(session: Session, *, job_id: int) -> int | None:
    """The id of the token that created the job (None for jobs from before owners were kept); NotFound names the id."""
    row = session.execute(select(Job.id, Job.owner_token_id).where(Job.id == job_id)).one_or_none()
    if row is None:
        raise NotFound(f"job {job_id} does not exist")
    return row.owner_token_id


def cancel_job(session: Session, *, job_id: int) -> JobPublic:
    """Cancel a queued or running job and withdraw its unmeasured candidates.

    A compare-and-set on the status, so a job that finished meanwhile is a
    Conflict rather than being rewritten. Measurements already taken stay:
    they still count for best configs. The tuner sees the status and stops.
    """
    live = [JobStatus.queued.value, JobStatus.running.value]
    won = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(live))
        .values(status=JobStatus.cancelled.value, finished_at=db_now(session))
    ).rowcount
    if not won:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"job {job_id} does not exist")
        raise Conflict(f"job {job_id} is {job.status}; only a queued or running job can be cancelled")
    queue.cancel_candidates(session, task_ids=list(session.scalars(select(Task.id).where(Task.job_id == job_id))))
    session.expire_all()  # the update bypassed the identity map
    return job_public(session, job_id=job_id)



def job_workloads(session: Session, *, job_id: int) -> tuple[dict[str, Any], str, list[int]]:
    """(target JSON, target key, workload ids) of a job's tasks."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    ids = list(session.scalars(select(Task.workload_id).where(Task.job_id == job_id).order_by(Task.id)))
    return json.loads(job.target_json), job.target_key, ids


def model_workloads(session: Session, *, model_id: int, target_key: str) -> list[int]:
    """Workload ids of every job of this model on this target key (empty when none)."""
    if session.get(Model, model_id, options=[defer(Model.content)]) is None:
        raise NotFound(f"model {model_id} does not exist")
    return list(
        session.scalars(
            select(Task.workload_id)
            .join(Job, Job.id == Task.job_id)
            .where(Job.model_id == model_id, Job.target_key == target_key)
            .distinct()
        )
    )

