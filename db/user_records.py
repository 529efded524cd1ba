"""Records and workloads that TVM users commit through ``tunehub.metaschedule.Database``.

Kept apart from the fleet's ``measurements``: a user's numbers come from their
own machine and script, so they never enter ``db.ranking`` (the fleet's served
best). Each record is stored as TVM's own ``TuningRecord.as_json()`` text with
the two facts MetaSchedule's ``get_top_k`` needs precomputed at commit:
``sort_secs`` (TVM's mean run seconds, ``1e10`` when there are none) and
``valid`` (``TuningRecord::IsValid``, the rule ``db.ranking`` applies to the
fleet's measurements too), so the top-k query is one indexed read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, String, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from common.errors import NotFound
from db.engine import db_now
from db.models import Base, BigId
from db.ranking import FAILED_STUB_SECS, is_valid_record
from db.workloads import upsert_workloads


def mean_run_secs(run_secs: list[float] | None) -> float:
    """TVM's ``SortTuningRecordByMeanRunSecs::Mean``: the mean, or ``1e10`` when absent or empty."""
    return sum(run_secs) / len(run_secs) if run_secs else FAILED_STUB_SECS


def record_facts(record_json: str) -> tuple[float, bool]:
    """(sort seconds, valid) of ``TuningRecord.as_json()`` text: ``[[insts, decisions], run_secs, target, args]``.

    Read from the JSON alone (no TVM), so the service can check what a client sends.
    Raises ValueError for text of another shape.
    """
    try:
        trace, run_secs = json.loads(record_json)[:2]
        kinds = [str(inst[0]) for inst in trace[0]]
        secs = None if run_secs is None else [float(s) for s in run_secs]
    except (TypeError, IndexError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a MetaSchedule TuningRecord JSON: {exc}") from None
    return mean_run_secs(secs), is_valid_record(secs, kinds)


class UserWorkload(Base):
    """A shared workload row that a user committed (``Database.commit_workload``)."""

    __tablename__ = "user_workloads"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"), unique=True)
    owner: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class UserRecord(Base):
    """One ``TuningRecord`` a user committed, for one target key."""

    __tablename__ = "user_records"
    __table_args__ = (Index("ix_user_records_top", "target_key", "workload_id", "valid", "sort_secs", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"))
    target_key: Mapped[str] = mapped_column(String(1000))
    record_json: Mapped[str] = mapped_column(Text)  # TuningRecord.as_json(): [trace, run_secs, target, args_info]
    sort_secs: Mapped[float] = mapped_column(Float)  # TVM's mean run_secs; 1e10 when absent or empty
    valid: Mapped[bool] = mapped_column(Boolean)  # TVM's TuningRecord::IsValid
    owner: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


@dataclass(frozen=True)
class _NewWorkload:
    shash: str
    mod_json: str
    args_info_json: str
    flops: float | None = None


@dataclass(frozen=True)
class StoredWorkload:
    """A user-committed workload: its ``user_workloads`` id (sync cursor), row id and module JSON."""

    id: int
    workload_id: int
    mod_json: str


@dataclass(frozen=True)
class StoredRecord:
    """A user record as stored: ``record_json`` is ``TuningRecord.as_json()`` text."""

    id: int
    workload_id: int
    record_json: str


def add_user_workload(session: Session, *, shash: str, mod_json: str, args_info_json: str, owner: str) -> int:
    """The workload's row id; stores the workload (shared table) and marks it user-committed. Idempotent."""
    wid = upsert_workloads(session, extracted=[_NewWorkload(shash, mod_json, args_info_json)])[shash]
    if session.scalar(select(UserWorkload.id).where(UserWorkload.workload_id == wid)) is None:
        session.add(UserWorkload(workload_id=wid, owner=owner, created_at=db_now(session)))
        session.flush()
    return wid


def user_workloads_after(session: Session, *, after_id: int) -> list[StoredWorkload]:
    """User-committed workloads newer than ``after_id``, oldest first (what a reader has not seen yet)."""
    from db.models import Workload

    rows = session.execute(
        select(UserWorkload.id, UserWorkload.workload_id, Workload.mod_json)
        .join(Workload, Workload.id == UserWorkload.workload_id)
        .where(UserWorkload.id > after_id)
        .order_by(UserWorkload.id)
    )
    return [StoredWorkload(id=r.id, workload_id=r.workload_id, mod_json=r.mod_json) for r in rows]


def add_user_record(session: Session, *, workload_id: int, target_key: str, record_json: str, owner: str) -> int:
    """Store one record; its sort seconds and validity are read from the record itself (``record_facts``).

    Raises NotFound when the workload was not committed as a user workload first.
    """
    sort_secs, valid = record_facts(record_json)
    if session.scalar(select(UserWorkload.id).where(UserWorkload.workload_id == workload_id)) is None:
        raise NotFound(f"workload {workload_id} is not a committed user workload; commit the workload first")
    row = UserRecord(
        workload_id=workload_id, target_key=target_key, record_json=record_json, sort_secs=sort_secs,
        valid=valid, owner=owner, created_at=db_now(session),
    )
    session.add(row)
    session.flush()
    return row.id


def top_user_records(session: Session, *, target_key: str, workload_ids: list[int], k: int) -> list[StoredRecord]:
    """The ``k`` best valid records of these workloads: mean seconds, then commit order (TVM's multiset order)."""
    if k <= 0 or not workload_ids:
        return []
    rows = session.execute(
        select(UserRecord.id, UserRecord.workload_id, UserRecord.record_json)
        .where(UserRecord.target_key == target_key, UserRecord.workload_id.in_(workload_ids), UserRecord.valid)
        .order_by(UserRecord.sort_secs, UserRecord.id)
        .limit(k)
    )
    return [StoredRecord(id=r.id, workload_id=r.workload_id, record_json=r.record_json) for r in rows]


def all_user_records(session: Session, *, target_key: str | None = None) -> list[StoredRecord]:
    """Every record (of one target key, or all), in TVM's order: mean seconds, then commit order."""
    query = select(UserRecord.id, UserRecord.workload_id, UserRecord.record_json)
    if target_key is not None:
        query = query.where(UserRecord.target_key == target_key)
    rows = session.execute(query.order_by(UserRecord.sort_secs, UserRecord.id))
    return [StoredRecord(id=r.id, workload_id=r.workload_id, record_json=r.record_json) for r in rows]


def count_user_records(session: Session, *, target_key: str) -> int:
    return int(session.scalar(select(func.count()).select_from(UserRecord).where(UserRecord.target_key == target_key)) or 0)
