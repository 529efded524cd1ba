"""The dashboard's JSON endpoints under ``/dashboard/api``: what its pages poll for live updates.

Read-only views from ``db.dashboard_queries``; the numbers the public API also
serves (progress, best latency per task) come from the same db queries (db.jobs, db.ranking), so
the two never disagree. Admin and user tokens, by cookie or Bearer header.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from common.protocol import JobStatus
from db import dashboard_queries as q
from service.dashboard.auth import PREFIX, ApiViewer
from service.deps import SessionDep

router = APIRouter(prefix=PREFIX + "/api", tags=["dashboard"])


@router.get("/jobs")
def jobs(
    session: SessionDep, _: ApiViewer, status: JobStatus | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> list[q.JobRow]:
    """Newest jobs first, with progress, ETA and the estimated model latency."""
    return q.jobs_overview(session, status=status, limit=limit)


@router.get("/jobs/{job_id}")
def job(job_id: Annotated[int, Path(ge=1, le=2**62)], session: SessionDep, _: ApiViewer) -> q.JobDetail:
    """One job's tasks, tuning curves and trials; 404 for an unknown id."""
    return q.job_detail(session, job_id=job_id)


@router.get("/workers")
def workers(session: SessionDep, _: ApiViewer) -> list[q.WorkerRow]:
    """Every worker: last seen, throughput, errors by kind, calibration."""
    return q.workers_overview(session)


@router.get("/targets")
def targets(session: SessionDep, _: ApiViewer) -> list[str]:
    """Target keys that have jobs or measurements."""
    return q.targets(session)


@router.get("/workloads")
def workloads(target: Annotated[str, Query(min_length=1, max_length=1000)], session: SessionDep, _: ApiViewer) -> list[q.WorkloadRow]:
    """Workloads on one target key: best config, measurement counts, family, the models using them."""
    return q.workloads_for_target(session, target_key=target)
