"""Best configs: the fastest valid measurement per workload on a target key."""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from db.models import Candidate, Measurement, Workload
from db.records import BestRecord

FLAGGED_PENALTY = 1.05  # a flagged result must be >5 % faster to displace an unflagged one

def best_records(session: Session, *, target_key: str, workload_ids: Iterable[int]) -> list[BestRecord]:
    """The fastest valid measurement per workload on one target key, from every job.

    The fleet never forgets: a workload tuned for another model (or a job
    since cancelled) still gives its best. Ties go to the lowest candidate id
    so the same database always yields the same config file.

    Flagged measurements (taken on a degraded or disturbed worker) are
    down-weighted: ranked as if ``FLAGGED_PENALTY`` times slower. Interference
    and throttling only ever slow a kernel, so a flagged result that is still
    clearly the fastest is a fast schedule and keeps winning; within the margin,
    where ordinary jitter could decide, the undisturbed measurement is trusted.
    """
    ids = sorted(set(workload_ids))
    if not ids:
        return []
    weighted = Measurement.mean_secs * case((Measurement.flagged, FLAGGED_PENALTY), else_=1.0)
    rank = (
        func.row_number()
        .over(partition_by=Measurement.workload_id, order_by=(weighted, Measurement.candidate_id))
        .label("rank")
    )
    ranked = (
        select(
            Measurement.workload_id,
            Measurement.candidate_id,
            Measurement.mean_secs,
            Measurement.run_secs_json,
            rank,
        )
        .where(
            Measurement.target_key == target_key,
            Measurement.workload_id.in_(ids),
            Measurement.mean_secs.is_not(None),
        )
        .subquery()
    )
    rows = session.execute(
        select(
            ranked.c.workload_id,
            ranked.c.candidate_id,
            ranked.c.mean_secs,
            ranked.c.run_secs_json,
            Workload.shash,
            Workload.mod_json,
            Workload.args_info_json,
            Candidate.trace_json,
        )
        .join(Workload, Workload.id == ranked.c.workload_id)
        .join(Candidate, Candidate.id == ranked.c.candidate_id)
        .where(ranked.c.rank == 1)
        .order_by(ranked.c.workload_id)
    )
    return [
        BestRecord(
            workload_id=r.workload_id,
            shash=r.shash,
            mod_json=r.mod_json,
            args_info_json=r.args_info_json,
            trace_json=r.trace_json,
            run_secs=json.loads(r.run_secs_json),
            mean_secs=r.mean_secs,
            candidate_id=r.candidate_id,
        )
        for r in rows
    ]
