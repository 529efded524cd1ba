"""Plain records that cross from db/ to the tuner and the service (no ORM objects)."""

from __future__ import annotations

from dataclasses import dataclass


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
