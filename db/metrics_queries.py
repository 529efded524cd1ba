"""The counts behind ``GET /metrics``, computed from the database at scrape time (and the tuner's round rows).

Why from the database: any number of API replicas and tuners share one
database, so a gauge or a counter read here is the same whichever replica
Prometheus scrapes, and it survives restarts. Counters (measurements, tuner
rounds) count rows that are never deleted, so they only grow. Tuners write
one ``tuner_rounds`` row per batch (``record_round``) for the same reason:
their work shows on whichever replica is scraped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from common.protocol import Calibration, CandidateState, JobStatus
from db.dashboard_queries import _error_kind_sql
from db.engine import db_now
from db.models import Candidate, Job, Lease, TunerRound, Worker

WORKER_STATES = ("online", "offline", "degraded", "suspect")
"""A worker is ``suspect`` (a winner failed confirmation), else ``degraded`` (its calibration says so), else
``online`` (seen within the window) or ``offline``."""


@dataclass(frozen=True)
class FleetCounts:
    """What one scrape reports about the fleet."""

    queue_depth: dict[str, int] = field(default_factory=dict)  # target key -> pending candidates
    active_leases: int = 0  # unexpired, unreleased leases still holding candidates
    expired_unswept: int = 0  # leases past their expiry still holding candidates (the next lease sweeps them)
    measurements: dict[str, int] = field(default_factory=dict)  # outcome ("ok" or an ErrorKind) -> rows
    workers: dict[str, int] = field(default_factory=dict)  # WORKER_STATES -> workers
    jobs: dict[str, int] = field(default_factory=dict)  # JobStatus -> jobs
    tuner_rounds: int = 0  # batches the tuners queued
    generation_s: float = 0.0  # seconds the tuners' searches spent proposing them, in all


def _holding_leased() -> object:
    return exists().where(Candidate.lease_id == Lease.id, Candidate.state == CandidateState.leased.value)


def expired_leases_holding_work(session: Session) -> int:
    """Leases past their expiry, not yet swept, that still hold leased candidates (they are about to expire)."""
    now = db_now(session)
    query = select(func.count()).select_from(Lease).where(
        Lease.released_at.is_(None), Lease.expires_at < now, _holding_leased()
    )
    return int(session.execute(query).scalar_one())


def fleet_counts(session: Session, *, worker_seen_s: float) -> FleetCounts:
    """Every count of one scrape, in one read-only pass."""
    now = db_now(session)
    depth = {key: n for key, n in session.execute(
        select(Candidate.target_key, func.count())
        .where(Candidate.state == CandidateState.pending.value)
        .group_by(Candidate.target_key)
    )}
    active = session.execute(
        select(func.count()).select_from(Lease).where(
            Lease.released_at.is_(None), Lease.expires_at >= now, _holding_leased()
        )
    ).scalar_one()
    kind = _error_kind_sql().label("kind")
    measured = {
        (k or "ok"): int(n)
        for k, n in session.execute(select(kind, func.count()).group_by(kind))
    }
    workers = dict.fromkeys(WORKER_STATES, 0)
    seen_since = now - timedelta(seconds=worker_seen_s)
    for suspect, calibration, seen in session.execute(
        select(Worker.suspect_reason, Worker.calibration_json, Worker.last_seen_at)
    ):
        if suspect is not None:
            workers["suspect"] += 1
        elif calibration and Calibration.model_validate_json(calibration).status == "degraded":
            workers["degraded"] += 1
        else:
            workers["online" if seen >= seen_since else "offline"] += 1
    jobs = dict.fromkeys((s.value for s in JobStatus), 0)
    jobs.update({s: int(n) for s, n in session.execute(select(Job.status, func.count()).group_by(Job.status))})
    rounds, generation = session.execute(
        select(func.count(), func.coalesce(func.sum(TunerRound.generation_s), 0.0)).select_from(TunerRound)
    ).one()
    return FleetCounts(
        queue_depth={k: int(n) for k, n in depth.items()},
        active_leases=int(active),
        expired_unswept=expired_leases_holding_work(session),
        measurements=measured,
        workers=workers,
        jobs=jobs,
        tuner_rounds=int(rounds),
        generation_s=float(generation),
    )


def record_round(
    session: Session, *, job_id: int, task_id: int, round: int, candidates: int, generation_s: float
) -> None:
    """A tuner queued a batch of ``candidates`` whose search took ``generation_s`` seconds to propose."""
    session.add(TunerRound(job_id=job_id, task_id=task_id, round=round, candidates=candidates,
                           generation_s=max(0.0, generation_s), created_at=db_now(session)))
