"""Workloads (one operator's TIR module each): stored once by structural hash, shared by every job.

``upsert_workloads`` is idempotent under races (``INSERT ... ON CONFLICT DO
NOTHING``), which is what lets measurements carry over between models.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.engine import db_now
from db.models import Workload



class WorkloadLike(Protocol):
    """What ``upsert_workloads`` reads from ``tuner.intake.ExtractedWorkload``."""

    shash: str
    mod_json: str
    args_info_json: str
    flops: float | None


def upsert_workloads(session: Session, *, extracted: Iterable[WorkloadLike]) -> dict[str, int]:
    """Insert the workloads not stored yet; returns {structural hash: workload id} for all.

    One ``INSERT ... ON CONFLICT (shash) DO NOTHING``: two jobs extracting the
    same operator at once (two replicas on PostgreSQL) both succeed and share
    one row, which is what lets measurements carry over between models.
    """
    by_hash: dict[str, WorkloadLike] = {}
    for w in extracted:
        by_hash.setdefault(w.shash, w)
    if not by_hash:
        return {}
    now = db_now(session)
    rows = [
        {"shash": h, "mod_json": w.mod_json, "args_info_json": w.args_info_json, "flops": w.flops, "created_at": now}
        for h, w in by_hash.items()
    ]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the two supported backends are above
        raise NotImplementedError(f"upsert_workloads on {dialect}")
    session.execute(insert(Workload).values(rows).on_conflict_do_nothing(index_elements=["shash"]))
    found = session.execute(select(Workload.shash, Workload.id).where(Workload.shash.in_(list(by_hash))))
    return {shash: wid for shash, wid in found}

