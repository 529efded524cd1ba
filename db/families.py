"""Workload families in the database: labelling them, and their members' best schedules.

A family is a shape- and dtype-free skeleton key (``tuner.transfer.family_key``;
it needs TVM, so this module only stores and queries it). The tuner labels
workloads lazily: ``unlabelled`` lists those measured on a target key whose
``family`` is still NULL, ``label`` writes the keys back; ``family_bests``
then answers "what worked for this operator at other shapes on this target".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from db.models import Candidate, Measurement, Workload
from db.ranking import ranked_measurements, valid_measurement


@dataclass(frozen=True)
class MemberBests:
    """One other member of a family: its module and its best traces (``db.ranking`` order)."""

    workload_id: int
    mod_json: str
    flops: float | None
    traces: list[str]


def _measured_on(target_key: str, *, valid: bool = False):  # type: ignore[no-untyped-def]
    """EXISTS a measurement of the outer workload on the key (by the (workload_id, target_key) index)."""
    cond = [Measurement.workload_id == Workload.id, Measurement.target_key == target_key]
    if valid:
        cond += [Candidate.id == Measurement.candidate_id, valid_measurement()]
    return exists().where(*cond)


def unlabelled(session: Session, *, target_key: str, limit: int = 1000) -> list[tuple[int, str]]:
    """(id, mod_json) of workloads measured on the key whose family is not known yet."""
    return [
        (wid, mod_json)
        for wid, mod_json in session.execute(
            select(Workload.id, Workload.mod_json)
            .where(Workload.family.is_(None), _measured_on(target_key))
            .order_by(Workload.id.desc())
            .limit(limit)
        ).all()
    ]


def label(session: Session, families: Mapping[int, str]) -> None:
    """Store computed family keys (idempotent: the key of a workload never changes)."""
    for wid, family in families.items():
        session.execute(update(Workload).where(Workload.id == wid).values(family=family))


def family_bests(
    session: Session,
    *,
    family: str,
    target_key: str,
    exclude_workload_id: int,
    flops: float | None,
    max_workloads: int = 4,
    per_workload: int = 4,
    tvm_version: str | None = None,
) -> list[MemberBests]:
    """The other members of ``family`` measured validly on the key, nearest in FLOPs first.

    Each with its ``per_workload`` best traces by the one ranking policy (``db.ranking``).
    """
    members = session.execute(
        select(Workload.id, Workload.flops).where(
            Workload.family == family,
            Workload.id != exclude_workload_id,
            _measured_on(target_key, valid=True),
        )
    ).all()

    def distance(f: float | None) -> float:
        if not f or not flops:
            return math.inf
        return abs(math.log(f / flops))

    chosen = sorted(members, key=lambda m: (distance(m.flops), -m.id))[:max_workloads]
    mods = dict(session.execute(
        select(Workload.id, Workload.mod_json).where(Workload.id.in_([m.id for m in chosen]))).all()) if chosen else {}
    ranked = ranked_measurements(
        session, target_key=target_key, workload_ids=[m.id for m in chosen], per_workload=per_workload,
        tvm_version=tvm_version,
    )
    return [
        MemberBests(wid, mods[wid], wl_flops, [m.trace_json for m in ranked.get(wid, [])]) for wid, wl_flops in chosen
    ]


def member_measurements(
    session: Session, *, workload_id: int, target_key: str, limit: int = 128
) -> list[tuple[str, tuple[float, ...]]]:
    """(trace JSON, run seconds) of a workload's newest unflagged valid measurements on the key.

    Good and bad alike (newest, not best): a cost model learns ranking from the spread.
    """
    rows = session.execute(
        select(Candidate.trace_json, Measurement.run_secs_json)
        .join(Measurement, Measurement.candidate_id == Candidate.id)
        .where(
            Measurement.workload_id == workload_id,
            Measurement.target_key == target_key,
            valid_measurement(),
            Measurement.flagged.is_(False),
        )
        .order_by(Measurement.id.desc())
        .limit(limit)
    ).all()
    return [(trace, tuple(float(x) for x in json.loads(secs))) for trace, secs in rows]
