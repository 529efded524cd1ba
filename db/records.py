"""Plain records that cross from db/ to the tuner and the service (no ORM objects)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.protocol import Calibration, Role


@dataclass(frozen=True)
class BestRecord:
    """The fastest valid measurement of one workload on one target key."""

    workload_id: int
    shash: str
    mod_json: str  # tvm.ir.save_json(IRModule)
    args_info_json: str  # ArgInfo JSON list
    trace_json: str  # MetaSchedule trace JSON
    run_secs: list[float]
    mean_secs: float
    candidate_id: int
    confirmed: bool = False  # re-measured on a second worker of the target key, and it agreed


@dataclass(frozen=True)
class TokenRecord:
    """A stored token as the service needs it (never its hash)."""

    id: int
    name: str
    role: Role


@dataclass(frozen=True)
class ModelFile:
    """An uploaded model's bytes and the input shapes it was stored with (what job intake reads)."""

    id: int
    content: bytes
    input_shapes: dict[str, list[int]]


@dataclass(frozen=True)
class WorkerRecord:
    """A registered worker: who may drive it (``token_id``) and what a lease needs of it."""

    id: int
    name: str
    token_id: int | None
    hardware: dict[str, Any]
    target: dict[str, Any]
    target_key: str
    last_seen_at: datetime
    calibration: Calibration | None
    suspect_reason: str | None = None  # one of its winners failed confirmation (db.confirmation)
    emulated: bool = False  # timings from emulation: stored, never ranked (db.ranking)
