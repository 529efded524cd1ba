"""What the cost model learns from: a target key's measurements as plain records.

``cost_model.store`` replays and featurises these; the queries live here so
cost_model/ holds no SQL. Flagged measurements are never training data
(disturbed timings would teach the model noise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Candidate, Measurement, Worker, Workload
from db.ranking import ranked_measurements
from db.ranking import has_schedule_instruction
from db.workers import emulated_worker_ids


@dataclass(frozen=True)
class TrainingRow:
    """One unflagged measurement: its trace and mean seconds (None for an error)."""

    measurement_id: int
    workload_id: int
    mean_secs: float | None
    trace_json: str


def training_rows(
    session: Session, *, target_key: str, after_id: int = 0, upto_id: int | None = None, limit: int = 50_000
) -> list[TrainingRow]:
    """Unflagged measurements of the key with ``after_id < id <= upto_id``: the newest ``limit``, oldest first.

    Emulated workers' measurements are left out: an emulated time teaches nothing about the hardware;
    so are traces without a schedule instruction (``FleetRunner``'s ad-hoc runs): no schedule to learn.
    """
    query = (
        select(Measurement.id, Measurement.workload_id, Measurement.mean_secs, Candidate.trace_json)
        .join(Candidate, Candidate.id == Measurement.candidate_id)
        .where(Measurement.target_key == target_key, Measurement.id > after_id, Measurement.flagged.is_(False),
               Measurement.worker_id.not_in(emulated_worker_ids()), has_schedule_instruction())
        .order_by(Measurement.id.desc())
        .limit(limit)
    )
    if upto_id is not None:
        query = query.where(Measurement.id <= upto_id)
    return [TrainingRow(*row) for row in session.execute(query).all()[::-1]]


def workload_modules(session: Session, *, workload_ids: Sequence[int]) -> dict[int, str]:
    """{workload id: IRModule JSON} of these workloads."""
    if not workload_ids:
        return {}
    return dict(session.execute(
        select(Workload.id, Workload.mod_json).where(Workload.id.in_(list(workload_ids)))).all())


def busiest_target_key(session: Session) -> str | None:
    """The target key with the most measurements (None on an empty database)."""
    return session.scalar(
        select(Measurement.target_key).group_by(Measurement.target_key).order_by(func.count().desc()).limit(1))


def target_of_key(session: Session, *, target_key: str) -> str:
    """A target JSON for the key: a worker's, or the key itself (it is the canonical target JSON)."""
    return session.scalar(select(Worker.target_json).where(Worker.target_key == target_key).limit(1)) or target_key


def workload_bests(session: Session, *, target_key: str, workload_ids: Sequence[int]) -> dict[int, float]:
    """{workload id: mean seconds of its best valid unflagged measurement on the key} (the labels' scale).

    The best by the one ranking policy (``db.ranking``), over the whole database.
    """
    ranked = ranked_measurements(session, target_key=target_key, workload_ids=workload_ids, unflagged_only=True)
    return {wid: best[0].mean_secs for wid, best in ranked.items()}
