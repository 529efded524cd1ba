"""Workers: a daemon registers the target it serves (once per name, token and target key).

Functions are keyword-only, take the caller's session and never commit.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from common.errors import NotFound
from common.protocol import Calibration, WorkerPublic
from db.engine import as_utc, db_now
from db.models import Worker
from db.records import WorkerRecord



def register_worker(
    session: Session,
    *,
    name: str,
    token_id: int | None,
    hardware: dict[str, Any],
    target_json: dict[str, Any] | str,
    target_key: str,
    emulated: bool = False,
) -> WorkerRecord:
    """Register a worker, or return it again when it restarts.

    A daemon registers at every start; (name, token, target key) identifies it,
    so a restart keeps its id and its leases instead of adding a row each time.
    The same name serving another target is another worker: its measurements
    compare with a different key. ``emulated`` is what the worker says at this
    registration (a restart under other conditions updates it).
    """
    now = db_now(session)
    text = target_json if isinstance(target_json, str) else json.dumps(target_json, sort_keys=True)
    row = session.scalars(
        select(Worker)
        .where(Worker.name == name, Worker.token_id == token_id, Worker.target_key == target_key)
        .order_by(Worker.id)
        .limit(1)
    ).one_or_none()
    if row is None:
        row = Worker(name=name, token_id=token_id, target_key=target_key, registered_at=now)
        session.add(row)
    row.hardware_json = json.dumps(hardware, sort_keys=True)
    row.target_json = text
    row.emulated = emulated
    row.last_seen_at = now
    session.flush()
    return _record(row)


def emulated_worker_ids() -> Select[tuple[int]]:
    """SQL: the ids of workers under emulation, whose timings are stored but never used as times
    (not ranked, not cost-model labels)."""
    return select(Worker.id).where(Worker.emulated.is_(True))


def get_worker(session: Session, *, worker_id: int) -> WorkerRecord:
    """The registered worker; NotFound tells the caller to register first."""
    row = session.get(Worker, worker_id)
    if row is None:
        raise NotFound(f"worker {worker_id} is not registered; POST /api/v1/workers first")
    return _record(row)


def _record(row: Worker) -> WorkerRecord:
    calibration = Calibration.model_validate_json(row.calibration_json) if row.calibration_json else None
    return WorkerRecord(
        id=row.id,
        name=row.name,
        token_id=row.token_id,
        hardware=json.loads(row.hardware_json or "{}"),
        target=json.loads(row.target_json),
        target_key=row.target_key,
        last_seen_at=as_utc(row.last_seen_at),
        calibration=calibration,
        suspect_reason=row.suspect_reason,
        emulated=bool(row.emulated),
    )


def list_workers(session: Session, *, target_key: str | None = None) -> list[WorkerPublic]:
    q = select(Worker).order_by(Worker.id)
    if target_key is not None:
        q = q.where(Worker.target_key == target_key)
    return [worker_public(_record(w)) for w in session.scalars(q)]


def worker_public(worker: WorkerRecord) -> WorkerPublic:
    """The wire view of a worker (no token, no timestamps)."""
    return WorkerPublic(
        id=worker.id, name=worker.name, target=worker.target, target_key=worker.target_key,
        calibration=worker.calibration, suspect=worker.suspect_reason is not None,
        suspect_reason=worker.suspect_reason, emulated=worker.emulated,
    )


def set_worker_calibration(session: Session, *, worker_id: int, calibration: Calibration) -> None:
    """Keep the calibration a worker last reported (shown by ``GET /workers``)."""
    session.execute(
        update(Worker).where(Worker.id == worker_id).values(calibration_json=calibration.model_dump_json())
    )

