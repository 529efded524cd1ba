"""Versioned cost models in ``cost_models``, their evaluations' verdicts, and the model a job used.

Functions are keyword-only, take the caller's session and never commit; they
return ``StoredModel`` records, never ORM rows. Versions only grow: two tuners
saving at once race on (target key, version), and the loser gets an
``IntegrityError`` from the flush (``cost_model.store.refresh`` handles it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.engine import as_utc, db_now
from db.models import CostModelEvaluation, CostModelVersion, Job, Measurement


@dataclass(frozen=True)
class StoredModel:
    """One stored booster version of a target key, with its training watermark."""

    target_key: str
    version: int
    n_samples: int
    full_samples: int
    max_measurement_id: int
    meta: dict[str, Any]
    blob: bytes
    created_at: datetime


def latest(session: Session, *, target_key: str) -> StoredModel | None:
    """The key's current (highest) version, or None before the first training."""
    row = session.scalars(
        select(CostModelVersion)
        .where(CostModelVersion.target_key == target_key)
        .order_by(CostModelVersion.version.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return StoredModel(
        row.target_key, row.version, row.n_samples, row.full_samples, row.max_measurement_id,
        json.loads(row.meta_json or "{}"), bytes(row.blob), as_utc(row.created_at),
    )


def save(
    session: Session, *, target_key: str, blob: bytes, n_samples: int, full_samples: int,
    max_measurement_id: int, meta: dict[str, Any],
) -> int:
    """Store a new version (previous + 1); returns it. Two concurrent savers: one gets an IntegrityError."""
    current = session.scalar(
        select(func.max(CostModelVersion.version)).where(CostModelVersion.target_key == target_key)
    )
    version = int(current or 0) + 1
    session.add(CostModelVersion(
        target_key=target_key, version=version, n_samples=n_samples, full_samples=full_samples,
        max_measurement_id=max_measurement_id, meta_json=json.dumps(meta, sort_keys=True), blob=blob,
        created_at=db_now(session)))
    session.flush()
    return version


def count_new(session: Session, *, target_key: str, after_id: int) -> tuple[int, int]:
    """(how many measurements of the key are newer than ``after_id``, the newest id)."""
    n, newest = session.execute(
        select(func.count(), func.max(Measurement.id))
        .where(Measurement.target_key == target_key, Measurement.id > after_id)
    ).one()
    return int(n or 0), int(newest or after_id)


@dataclass(frozen=True)
class Evaluation:
    """A stored leave-one-model-out verdict of a target key: does tunehub's model rank better?"""

    target_key: str
    tunehub_wins: bool
    report: dict[str, Any]
    created_at: datetime


def record_evaluation(session: Session, *, target_key: str, tunehub_wins: bool, report: dict[str, Any]) -> None:
    """Store an evaluation's verdict with the scores it was drawn from."""
    session.add(CostModelEvaluation(target_key=target_key, tunehub_wins=tunehub_wins,
                                    report_json=json.dumps(report, sort_keys=True), created_at=db_now(session)))
    session.flush()


def latest_evaluation(session: Session, *, target_key: str) -> Evaluation | None:
    """The key's newest evaluation, or None when it was never evaluated."""
    row = session.scalars(
        select(CostModelEvaluation).where(CostModelEvaluation.target_key == target_key)
        .order_by(CostModelEvaluation.id.desc()).limit(1)
    ).first()
    if row is None:
        return None
    return Evaluation(row.target_key, bool(row.tunehub_wins), json.loads(row.report_json), as_utc(row.created_at))


def set_job_cost_model(session: Session, *, job_id: int, kind: str) -> None:
    """Record which cost model the job's search uses (``tuner.cost_models.CostModelKind`` value)."""
    session.execute(update(Job).where(Job.id == job_id).values(cost_model=kind))
