"""Where a served record comes from: the worker(s) and calibration that measured it, its trials, dates, TVM version.

Config bundles (``tuner.configs``) stamp this into ``manifest.json`` so that a
user can tell, like TVM's TopHub or Inductor's autotune cache, what produced a
schedule before trusting it. Keyword-only functions on the caller's session;
plain records out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.engine import as_utc
from db.models import Candidate, Measurement, Task, Worker
from db.ranking import valid_measurement


@dataclass(frozen=True)
class WorkerStamp:
    """A worker as a manifest names it: who it is, its hardware and TVM, and its calibration as last reported."""

    id: int
    name: str
    role: str  # "measured" or "confirmed" (re-measured it on a second worker and agreed or not)
    cpu: str | None
    gpu: str | None
    tvm_version: str | None
    calibration: dict[str, Any] | None
    suspect: bool

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()}


@dataclass(frozen=True)
class RecordProvenance:
    """One served measurement and where it comes from."""

    measurement_id: int
    workload_id: int
    candidate_id: int
    job_id: int | None
    round: int
    transferred: bool  # adapted from another workload of the family, not found by this workload's search
    tvm_version: str | None  # None: stored before versions were kept
    flagged: bool  # measured while its worker was degraded or disturbed
    confirmation: str | None  # db.confirmation.Confirmation; None: never asked
    measured_at: datetime
    workers: tuple[WorkerStamp, ...]
    trials: int  # measurements of this workload on the target key, all outcomes
    valid_trials: int  # of which valid (db.ranking)
    first_measured_at: datetime | None
    last_measured_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "workers"}
        for key in ("measured_at", "first_measured_at", "last_measured_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        out["workers"] = [w.as_dict() for w in self.workers]
        return out


def _stamp(row: Worker, role: str) -> WorkerStamp:
    hardware = json.loads(row.hardware_json or "{}")
    gpu = hardware.get("gpu")
    return WorkerStamp(
        id=row.id,
        name=row.name,
        role=role,
        cpu=str(hardware["cpu"]) if hardware.get("cpu") is not None else None,
        gpu=str(gpu.get("name")) if isinstance(gpu, dict) and gpu.get("name") else None,
        tvm_version=str(hardware["tvm"]) if hardware.get("tvm") is not None else None,
        calibration=json.loads(row.calibration_json) if row.calibration_json else None,
        suspect=row.suspect_reason is not None,
    )


def record_provenance(session: Session, *, target_key: str, measurement_ids: Iterable[int]) -> dict[int, RecordProvenance]:
    """{measurement id: its provenance} for these measurements of one target key."""
    ids = sorted(set(measurement_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(Measurement, Candidate.round, Candidate.transferred, Task.job_id)
        .join(Candidate, Candidate.id == Measurement.candidate_id)
        .outerjoin(Task, Task.id == Candidate.task_id)
        .where(Measurement.id.in_(ids))
    ).all()
    # The confirmations of each: measurements of candidates that re-measured it on another worker.
    confirmers: dict[int, list[int]] = {}
    for original, worker_id in session.execute(
        select(Candidate.confirms_measurement_id, Measurement.worker_id)
        .join(Measurement, Measurement.candidate_id == Candidate.id)
        .where(Candidate.confirms_measurement_id.in_(ids))
    ):
        confirmers.setdefault(int(original), []).append(int(worker_id))
    worker_ids = {m.worker_id for m, *_ in rows} | {w for ws in confirmers.values() for w in ws}
    workers = {w.id: w for w in session.scalars(select(Worker).where(Worker.id.in_(worker_ids)))}
    workload_ids = {m.workload_id for m, *_ in rows}
    trials: dict[int, tuple[int, Any, Any]] = {
        r.workload_id: (int(r.n), r.first, r.last)
        for r in session.execute(
            select(Measurement.workload_id, func.count().label("n"), func.min(Measurement.created_at).label("first"),
                   func.max(Measurement.created_at).label("last"))
            .where(Measurement.target_key == target_key, Measurement.workload_id.in_(workload_ids))
            .group_by(Measurement.workload_id)
        )
    }
    valid = dict(
        (r.workload_id, int(r.n))
        for r in session.execute(
            select(Measurement.workload_id, func.count().label("n"))
            .join(Candidate, Candidate.id == Measurement.candidate_id)
            .where(Measurement.target_key == target_key, Measurement.workload_id.in_(workload_ids), valid_measurement())
            .group_by(Measurement.workload_id)
        )
    )
    out: dict[int, RecordProvenance] = {}
    for m, round_, transferred, job_id in rows:
        n, first, last = trials.get(m.workload_id, (0, None, None))
        stamps = [_stamp(workers[m.worker_id], "measured")]
        stamps += [_stamp(workers[w], "confirmed") for w in sorted(set(confirmers.get(m.id, [])))]
        out[m.id] = RecordProvenance(
            measurement_id=m.id,
            workload_id=m.workload_id,
            candidate_id=m.candidate_id,
            job_id=job_id,
            round=int(round_),
            transferred=bool(transferred),
            tvm_version=m.tvm_version,
            flagged=bool(m.flagged),
            confirmation=m.confirmation,
            measured_at=as_utc(m.created_at),  # type: ignore[arg-type]
            workers=tuple(stamps),
            trials=n,
            valid_trials=valid.get(m.workload_id, 0),
            first_measured_at=as_utc(first),
            last_measured_at=as_utc(last),
        )
    return out


def measured_workloads(session: Session, *, target_key: str) -> list[int]:
    """Every workload with a valid measurement on the target key (what a best-known bundle covers)."""
    return list(session.scalars(
        select(Measurement.workload_id)
        .join(Candidate, Candidate.id == Measurement.candidate_id)
        .where(Measurement.target_key == target_key, valid_measurement())
        .distinct()
        .order_by(Measurement.workload_id)
    ))


def other_tvm_versions(session: Session, *, target_key: str, workload_ids: Iterable[int], tvm_version: str) -> dict[str, int]:
    """{other TVM version: valid measurements of these workloads on the key}: what a bundle for ``tvm_version`` leaves out."""
    ids = sorted(set(workload_ids))
    if not ids:
        return {}
    return {
        str(v): int(n)
        for v, n in session.execute(
            select(Measurement.tvm_version, func.count())
            .join(Candidate, Candidate.id == Measurement.candidate_id)
            .where(Measurement.target_key == target_key, Measurement.workload_id.in_(ids), valid_measurement(),
                   Measurement.tvm_version.is_not(None), Measurement.tvm_version != tvm_version)
            .group_by(Measurement.tvm_version)
        )
    }
