"""Read-only queries behind the web dashboard: jobs, one job's tuning history, workers, workloads.

Each function takes an open session, only reads, and returns plain pydantic
views (no ORM object leaves db/), so the service can serve them as JSON as they
are. Progress and "best" come from db.jobs and db.ranking (``list_jobs``,
``best_records``); what is new here is history (curves, trials), per-worker
statistics and the per-target workload table.

Latencies are seconds; times are naive UTC from the database's clock.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Case, case, func, select
from sqlalchemy.orm import Session

from common.protocol import Calibration, ErrorKind, JobPublic, JobStatus, TaskPublic
from db import jobs as job_views
from db.ranking import best_records
from db.engine import as_utc, db_now
from db.models import Candidate, Job, Measurement, Model, Task, Worker, Workload

THROUGHPUT_WINDOW = timedelta(minutes=10)
"""Workers' throughput counts the measurements of this recent window."""

MAX_TRIALS = 2000
"""A job page lists at most this many of its newest trials (its curves use them all)."""


# --- views --------------------------------------------------------------------


class JobRow(BaseModel):
    """A job with its progress and, while it runs, an estimate of the time left."""

    id: int
    model_id: int
    model_name: str
    status: JobStatus
    target_key: str
    trials: int
    trials_done: int
    progress: float  # trials_done / trials, capped at 1
    tasks: int
    tasks_tuned: int  # tasks with at least one valid measurement
    est_total_s: float | None  # sum of weight x best over tasks; None until every task has a best
    elapsed_s: float | None
    eta_s: float | None  # running jobs with progress only: time left at the rate so far
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class TaskRow(TaskPublic):
    """A task as the job page shows it: the API's numbers plus where its search started."""

    first_latency_s: float | None  # the task's first valid measurement in this job
    speedup: float | None  # first / best


class Trial(BaseModel):
    """One measurement of the job, numbered in the order results arrived."""

    n: int
    candidate_id: int
    task_id: int
    worker_id: int
    latency_s: float | None
    error_kind: ErrorKind | None
    error: str | None
    flagged: bool
    at_s: float  # seconds since the job started


class CurvePoint(BaseModel):
    """The state of the search after trial ``n``: best so far per task (in task order) and in total.

    A job's curve holds its first and last trial and every trial that improved a task's best;
    between two points nothing changed (plot it as steps).
    """

    n: int
    at_s: float
    task_best_s: list[float | None]
    est_total_s: float | None


class JobDetail(BaseModel):
    job: JobRow
    tasks: list[TaskRow]
    curve: list[CurvePoint]  # the corners of the best-so-far step function
    trials: list[Trial]  # newest first, at most MAX_TRIALS


class WorkerRow(BaseModel):
    id: int
    name: str
    target_key: str
    registered_at: datetime
    last_seen_at: datetime
    seen_ago_s: float
    measurements: int
    valid: int
    per_minute: float  # measurements per minute over THROUGHPUT_WINDOW
    errors: dict[ErrorKind, int]  # error count by kind, over all its measurements
    error_rate: float  # errors / measurements (0 with none)
    calibration: Calibration | None
    suspect: bool | None  # None where the schema has no suspect flag


class WorkloadRow(BaseModel):
    """One workload measured on a target: its best config there and who uses it."""

    id: int
    hash: str
    family: str | None
    flops: float | None
    measurements: int
    valid: int
    best_latency_s: float | None
    best_candidate_id: int | None
    gflops: float | None  # flops / best latency
    models: list[str]  # names of the models whose jobs on this target contain it


# --- error kinds ----------------------------------------------------------------


def _error_kind_sql() -> Case[Any]:
    """A measurement's error kind as the worker classified it (NULL for valid ones).

    Rows stored before ``measurements.error_kind`` existed have none: they count as build errors,
    the stage where most failures happen.
    """
    return case((Measurement.error.is_(None), None), else_=func.coalesce(Measurement.error_kind, ErrorKind.build.value))


def _kind(error: str | None, stored: str | None) -> ErrorKind | None:
    return None if error is None else ErrorKind(stored or ErrorKind.build.value)


# --- jobs -----------------------------------------------------------------------


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    """Seconds between two timestamps, stored (naive UTC) or from the wire (aware)."""
    if later is None or earlier is None:
        return None
    return max((as_utc(later) - as_utc(earlier)).total_seconds(), 0.0)


def _est_total(tasks: list[TaskPublic]) -> float | None:
    if not tasks or any(t.best_latency_s is None for t in tasks):
        return None
    return sum(t.weight * t.best_latency_s for t in tasks)  # type: ignore[operator]


def _job_row(job: JobPublic, model_name: str, now: datetime) -> JobRow:
    end = job.finished_at or now
    elapsed = _seconds(end, job.started_at)
    eta = None
    if job.status is JobStatus.running and elapsed and job.trials_done:
        eta = max(job.trials - job.trials_done, 0) * elapsed / job.trials_done
    return JobRow(
        id=job.id,
        model_id=job.model_id,
        model_name=model_name,
        status=job.status,
        target_key=job.target_key,
        trials=job.trials,
        trials_done=job.trials_done,
        progress=min(job.trials_done / job.trials, 1.0) if job.trials else 1.0,
        tasks=len(job.tasks),
        tasks_tuned=sum(t.best_latency_s is not None for t in job.tasks),
        est_total_s=_est_total(job.tasks),
        elapsed_s=elapsed,
        eta_s=eta,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def _model_names(session: Session, ids: set[int]) -> dict[int, str]:
    rows = session.execute(select(Model.id, Model.name).where(Model.id.in_(ids)))
    return {r.id: r.name for r in rows}


def jobs_overview(session: Session, *, status: JobStatus | None = None, limit: int = 200) -> list[JobRow]:
    """Newest jobs first with progress, ETA and the estimated model latency."""
    jobs = job_views.list_jobs(session, status=status, limit=limit)
    names = _model_names(session, {j.model_id for j in jobs})
    now = db_now(session)
    return [_job_row(j, names.get(j.model_id, "?"), now) for j in jobs]


def job_detail(session: Session, *, job_id: int) -> JobDetail:
    """One job: its tasks, its tuning curves and its trials; NotFound names the id."""
    job = job_views.job_public(session, job_id=job_id)
    names = _model_names(session, {job.model_id})
    row = _job_row(job, names.get(job.model_id, "?"), db_now(session))
    rows = session.execute(
        select(
            Measurement.candidate_id,
            Measurement.worker_id,
            Measurement.mean_secs,
            Measurement.error,
            Measurement.error_kind,
            Measurement.flagged,
            Measurement.created_at,
            Candidate.task_id,
        )
        .join(Candidate, Candidate.id == Measurement.candidate_id)
        .join(Task, Task.id == Candidate.task_id)
        .where(Task.job_id == job_id)
        .order_by(Measurement.id)
    ).all()
    start = job.started_at or (rows[0].created_at if rows else job.created_at)
    order = {t.id: i for i, t in enumerate(job.tasks)}
    weights = [t.weight for t in job.tasks]
    best: list[float | None] = [None] * len(job.tasks)
    first: dict[int, float] = {}
    curve: list[CurvePoint] = []
    trials: list[Trial] = []
    for n, r in enumerate(rows, start=1):
        at = _seconds(r.created_at, start) or 0.0
        i = order[r.task_id]
        improved = r.mean_secs is not None and (best[i] is None or r.mean_secs < best[i])  # type: ignore[operator]
        if improved:
            first.setdefault(r.task_id, r.mean_secs)
            best[i] = r.mean_secs
        if improved or n in (1, len(rows)):  # a step function: its corners and its ends say it all
            total = None if None in best else sum(w * b for w, b in zip(weights, best))  # type: ignore[misc]
            curve.append(CurvePoint(n=n, at_s=at, task_best_s=list(best), est_total_s=total))
        if n > len(rows) - MAX_TRIALS:
            trials.append(Trial(
                n=n, candidate_id=r.candidate_id, task_id=r.task_id, worker_id=r.worker_id, latency_s=r.mean_secs,
                error_kind=_kind(r.error, r.error_kind), error=r.error, flagged=r.flagged, at_s=at,
            ))
    tasks = []
    for t in job.tasks:
        f, b = first.get(t.id), t.best_latency_s
        measured_share = t.weight * b / row.est_total_s if b and row.est_total_s else None
        tasks.append(TaskRow(
            **t.model_dump(exclude={"share"}),
            first_latency_s=f,
            speedup=f / b if f and b else None,
            share=t.share if t.share is not None else measured_share,  # the scheduler's, when it recorded one
        ))
    return JobDetail(job=row, tasks=tasks, curve=curve, trials=trials[::-1])


# --- workers --------------------------------------------------------------------


def _suspect(worker: Worker) -> bool | None:
    """The worker's suspect flag where the schema has one (it is newer than this page)."""
    value = getattr(worker, "suspect", None)
    return None if value is None else bool(value)


def workers_overview(session: Session) -> list[WorkerRow]:
    """Every worker with its throughput, error rate by kind and last reported calibration."""
    now = db_now(session)
    kind = _error_kind_sql().label("kind")
    counts: dict[int, dict[ErrorKind | None, int]] = defaultdict(dict)
    for r in session.execute(
        select(Measurement.worker_id, kind, func.count().label("n")).group_by(Measurement.worker_id, kind)
    ):
        counts[r.worker_id][ErrorKind(r.kind) if r.kind else None] = r.n
    recent = {
        r.worker_id: r.n
        for r in session.execute(
            select(Measurement.worker_id, func.count().label("n"))
            .where(Measurement.created_at >= now - THROUGHPUT_WINDOW)
            .group_by(Measurement.worker_id)
        )
    }
    out = []
    for w in session.scalars(select(Worker).order_by(Worker.id)):
        by_kind = counts.get(w.id, {})
        total = sum(by_kind.values())
        errors = {k: n for k, n in by_kind.items() if k is not None}
        out.append(WorkerRow(
            id=w.id,
            name=w.name,
            target_key=w.target_key,
            registered_at=as_utc(w.registered_at),
            last_seen_at=as_utc(w.last_seen_at),
            seen_ago_s=_seconds(now, w.last_seen_at) or 0.0,
            measurements=total,
            valid=by_kind.get(None, 0),
            per_minute=recent.get(w.id, 0) / (THROUGHPUT_WINDOW.total_seconds() / 60),
            errors=errors,
            error_rate=sum(errors.values()) / total if total else 0.0,
            calibration=Calibration.model_validate_json(w.calibration_json) if w.calibration_json else None,
            suspect=_suspect(w),
        ))
    return out


# --- workloads ------------------------------------------------------------------


def targets(session: Session) -> list[str]:
    """Target keys that have jobs or measurements, sorted."""
    keys = set(session.scalars(select(Job.target_key).distinct()))
    keys |= set(session.scalars(select(Measurement.target_key).distinct()))
    return sorted(keys)


def workloads_for_target(session: Session, *, target_key: str) -> list[WorkloadRow]:
    """Workloads measured or queued on ``target_key``: best config (db.ranking), users, counts."""
    stats = {
        r.workload_id: r
        for r in session.execute(
            select(
                Measurement.workload_id,
                func.count().label("n"),
                func.count(Measurement.mean_secs).label("valid"),
            )
            .where(Measurement.target_key == target_key)
            .group_by(Measurement.workload_id)
        )
    }
    users: dict[int, set[str]] = defaultdict(set)
    for r in session.execute(
        select(Task.workload_id, Model.name)
        .join(Job, Job.id == Task.job_id)
        .join(Model, Model.id == Job.model_id)
        .where(Job.target_key == target_key)
    ):
        users[r.workload_id].add(r.name)
    ids = set(stats) | set(users)
    if not ids:
        return []
    best = {b.workload_id: b for b in best_records(session, target_key=target_key, workload_ids=ids)}
    out = []
    for w in session.execute(
        select(Workload.id, Workload.shash, Workload.family, Workload.flops).where(Workload.id.in_(ids)).order_by(Workload.id)
    ):
        b, s = best.get(w.id), stats.get(w.id)
        out.append(WorkloadRow(
            id=w.id,
            hash=w.shash,
            family=w.family,
            flops=w.flops,
            measurements=s.n if s else 0,
            valid=s.valid if s else 0,
            best_latency_s=b.mean_secs if b else None,
            best_candidate_id=b.candidate_id if b else None,
            gflops=w.flops / b.mean_secs / 1e9 if b and w.flops else None,
            models=sorted(users.get(w.id, ())),
        ))
    return out

