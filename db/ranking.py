"""The one definition of "best": valid measurements of a workload on a target key, ranked.

Policy (every "best" in tunehub goes through here: config downloads,
``SqlDatabase.get_top_k``, family transfer, 0-trial answers, cost-model labels):

- **valid**: the measurement has run seconds (``run_secs``/``mean_secs`` set),
  they are not TVM's failed-run stub (MetaSchedule reports a failed run as
  ``1e10`` s; a mean at or above ``FAILED_STUB_SECS`` is that stub, no kernel
  runs for 317 years), and its candidate has a trace (not empty text, ``[]`` or
  ``null``; ``[[],[]]``, the workload as written, is a real schedule and counts);
- **not refuted**: a result whose re-measurement on another worker disagreed
  (``db.confirmation``, ``rejected``) never counts, and a confirmation's own
  re-measurement is not a candidate for best (only its verdict counts);
- **unflagged before flagged**: a result timed on a degraded or disturbed worker
  (``flagged``) ranks after every unflagged one of the same workload, whatever
  its time; interference only slows kernels, so a flagged time is untrusted,
  but it still beats having nothing;
- **settled before pending**: a result awaiting confirmation ranks after every
  settled one of its workload, so an unconfirmed fast claim is not served while
  anything else is known (and is served, unconfirmed, when nothing else is);
- **not emulated**: a result timed by a worker under emulation (``Worker.emulated``,
  an aarch64 worker on qemu-user) proves the path but its time says nothing about
  the hardware, so it never counts;
- then by mean seconds, fastest first; ties by measurement id (the older wins),
  so the same database always gives the same answer.

Functions are keyword-only, take the caller's session and return frozen records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.orm import Session

from common.protocol import JobStatus
from db.confirmation import Confirmation, not_rejected
from db.models import Candidate, Job, Measurement, Task, Workload
from db.records import BestRecord
from db.workers import emulated_worker_ids

FAILED_STUB_SECS = 1e10
EMPTY_TRACES = ("", "[]", "null")


def valid_measurement() -> ColumnElement[bool]:
    """The validity half of the policy, on ``Measurement`` joined to its ``Candidate``."""
    return and_(
        Measurement.mean_secs.is_not(None),
        Measurement.run_secs_json.is_not(None),
        Measurement.mean_secs < FAILED_STUB_SECS,
        Candidate.trace_json.is_not(None),
        Candidate.trace_json.not_in(EMPTY_TRACES),
        Candidate.confirms_measurement_id.is_(None),
        not_rejected(),
        Measurement.worker_id.not_in(emulated_worker_ids()),
    )


_PENDING = case((Measurement.confirmation == Confirmation.pending.value, 1), else_=0)
RANK_ORDER = (Measurement.flagged, _PENDING, Measurement.mean_secs, Measurement.id)
"""The ordering half of the policy (false sorts before true on both backends)."""


@dataclass(frozen=True)
class RankedMeasurement:
    """A valid measurement with its candidate, in policy order within its workload (``rank`` 1 = best)."""

    rank: int
    measurement_id: int
    workload_id: int
    candidate_id: int
    task_id: int
    trace_json: str
    round: int
    state: str
    run_secs: tuple[float, ...]
    mean_secs: float
    flagged: bool
    confirmed: bool = False


def _ranked(
    *,
    target_key: str,
    workload_ids: list[int],
    unflagged_only: bool,
    exclude_task_id: int | None,
    done_jobs_except: int | None,
    tvm_version: str | None = None,
) -> Select:  # type: ignore[type-arg]
    conds = [Measurement.target_key == target_key, Measurement.workload_id.in_(workload_ids), valid_measurement()]
    if tvm_version is not None:  # rows stored before versions were kept (NULL) count as any version
        conds.append(or_(Measurement.tvm_version == tvm_version, Measurement.tvm_version.is_(None)))
    if unflagged_only:
        conds.append(Measurement.flagged.is_(False))
    if exclude_task_id is not None:
        conds.append(Candidate.task_id != exclude_task_id)
    query = select(
        func.row_number().over(partition_by=Measurement.workload_id, order_by=RANK_ORDER).label("rank"),
        Measurement.id.label("measurement_id"),
        Measurement.workload_id,
        Measurement.candidate_id,
        Candidate.task_id,
        Candidate.trace_json,
        Candidate.round,
        Candidate.state,
        Measurement.run_secs_json,
        Measurement.mean_secs,
        Measurement.flagged,
        Measurement.confirmation,
    ).join(Candidate, Candidate.id == Measurement.candidate_id)
    if done_jobs_except is not None:
        query = query.join(Task, Task.id == Candidate.task_id).join(Job, Job.id == Task.job_id)
        conds += [Job.status == JobStatus.done.value, Job.id != done_jobs_except]
    return query.where(*conds)


def ranked_measurements(
    session: Session,
    *,
    target_key: str,
    workload_ids: Iterable[int],
    per_workload: int = 1,
    unflagged_only: bool = False,
    exclude_task_id: int | None = None,
    done_jobs_except: int | None = None,
    tvm_version: str | None = None,
) -> dict[int, list[RankedMeasurement]]:
    """{workload id: its ``per_workload`` best valid measurements, in policy order}; workloads with none are absent.

    ``unflagged_only`` drops flagged results (training labels); ``exclude_task_id``
    leaves out one task's own candidates (a search warming from the fleet);
    ``done_jobs_except`` keeps only measurements of finished (``done``) jobs other
    than that one (is this workload tuned already?); ``tvm_version`` keeps only
    measurements by workers of that TVM version (and unstamped old rows).
    """
    ids = sorted(set(workload_ids))
    if not ids or per_workload <= 0:
        return {}
    ranked = _ranked(
        target_key=target_key, workload_ids=ids, unflagged_only=unflagged_only,
        exclude_task_id=exclude_task_id, done_jobs_except=done_jobs_except, tvm_version=tvm_version,
    ).subquery()
    rows = session.execute(
        select(ranked).where(ranked.c.rank <= per_workload).order_by(ranked.c.workload_id, ranked.c.rank)
    )
    out: dict[int, list[RankedMeasurement]] = {}
    for r in rows:
        out.setdefault(r.workload_id, []).append(RankedMeasurement(
            rank=r.rank, measurement_id=r.measurement_id, workload_id=r.workload_id, candidate_id=r.candidate_id,
            task_id=r.task_id, trace_json=r.trace_json, round=r.round, state=r.state,
            run_secs=tuple(float(s) for s in json.loads(r.run_secs_json)), mean_secs=float(r.mean_secs),
            flagged=bool(r.flagged), confirmed=r.confirmation == Confirmation.confirmed.value,
        ))
    return out


def best_records(
    session: Session, *, target_key: str, workload_ids: Iterable[int], tvm_version: str | None = None
) -> list[BestRecord]:
    """The best measurement per workload on one target key, from every job, with its workload (config download).

    The fleet never forgets: a workload tuned for another model (or a job
    since cancelled) still gives its best. Ordered by workload id.
    ``tvm_version`` as in ``ranked_measurements``.
    """
    best = ranked_measurements(session, target_key=target_key, workload_ids=workload_ids, tvm_version=tvm_version)
    if not best:
        return []
    wls = {
        w.id: w
        for w in session.execute(
            select(Workload.id, Workload.shash, Workload.mod_json, Workload.args_info_json).where(
                Workload.id.in_(list(best))
            )
        )
    }
    return [
        BestRecord(
            workload_id=wid,
            shash=wls[wid].shash,
            mod_json=wls[wid].mod_json,
            args_info_json=wls[wid].args_info_json,
            trace_json=m.trace_json,
            run_secs=list(m.run_secs),
            mean_secs=m.mean_secs,
            candidate_id=m.candidate_id,
            confirmed=m.confirmed,
            measurement_id=m.measurement_id,
        )
        for wid, (m,) in sorted(best.items())
    ]
