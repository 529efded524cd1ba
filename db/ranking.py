"""The one definition of "best": valid measurements of a workload on a target key, ranked.

Policy (every "best" in tunehub goes through here: config downloads,
``SqlDatabase.get_top_k``, family transfer, 0-trial answers, cost-model labels,
a job's per-task progress):

- **valid**: exactly MetaSchedule's ``TuningRecord::IsValid`` (TVM 0.27,
  ``src/s_tir/meta_schedule/database/database.cc``), so the fleet's "best" and
  a ``JSONDatabase``'s ``get_top_k`` drop the same records: the measurement has
  run seconds and not every one of them is TVM's failed-run stub (``1e10``;
  one real run among stubs keeps it, ordered by its mean like any other), and
  its trace has an instruction before ``EnterPostproc`` (an empty trace
  ``[[],[]]`` does not count). Ad-hoc runs (``db.adhoc_runs``: a user's
  already scheduled module measured by ``FleetRunner``) store exactly such an
  empty trace, so they are never a tuning record of the fleet;
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

Beside a ``JSONDatabase`` holding the same records, ``SqlDatabase.get_top_k``
keeps and drops the same ones and orders them the same (mean seconds, then
commit order), except where TVM has no notion of the fact: flagged and pending
results rank after the rest, and emulated workers' results are left out.
Records users commit through ``tunehub.metaschedule.Database`` live apart
(``db.user_records``) and never enter this ranking; they apply the same
``is_valid_record`` to themselves.

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
"""MetaSchedule's ``kMaxMeanTime``: the run time a failed run is reported as."""
_STUB_TEXTS = ("10000000000.0", "10000000000", "1e+10", "1e10", "1E+10", "1E10")
_BLANKS = (" ", "\n", "\r", "\t")
_NO_TRACE = ("", "[]", "null")


def _squeezed(column: ColumnElement[str], *, chars: int | None = None) -> ColumnElement[str]:
    """``column`` (or its first ``chars`` characters) without blanks, on both backends."""
    text = func.substr(column, 1, chars) if chars else column
    for blank in _BLANKS:
        text = func.replace(text, blank, "")
    return text


def has_schedule_instruction() -> ColumnElement[bool]:
    """The trace half of ``IsValid``: ``Candidate.trace_json`` has an instruction before ``EnterPostproc``.

    A trace is ``[[[kind, inputs, attrs, outputs], ...], decisions]``, so one
    without such an instruction shows in its first characters: ``[[]`` (none
    at all) or ``[[["EnterPostproc"``; empty text, ``[]`` and ``null`` are no
    trace. The fleet stores only ``trace_to_json`` text, so this is the whole rule.
    """
    head = _squeezed(Candidate.trace_json, chars=64)
    return and_(
        Candidate.trace_json.is_not(None),
        head.not_in(_NO_TRACE),
        head.not_like("[[]%"),
        head.not_like('[[["EnterPostproc"%'),
    )


def not_all_failed_stubs() -> ColumnElement[bool]:
    """The run-time half of ``IsValid``: run seconds are present and not every one is the ``1e10`` stub.

    Their mean is exactly ``1e10`` when they all are (a sum of equal integers
    is exact), so the text is looked at only then.
    """
    rest = _squeezed(Measurement.run_secs_json)
    for stub in _STUB_TEXTS:
        rest = func.replace(rest, stub, "")
    return and_(
        Measurement.mean_secs.is_not(None),
        Measurement.run_secs_json.is_not(None),
        or_(Measurement.mean_secs != FAILED_STUB_SECS, func.replace(rest, ",", "") != "[]"),
    )


def valid_measurement() -> ColumnElement[bool]:
    """The validity half of the policy, on ``Measurement`` joined to its ``Candidate``."""
    return and_(
        not_all_failed_stubs(),
        has_schedule_instruction(),
        Candidate.confirms_measurement_id.is_(None),
        not_rejected(),
        Measurement.worker_id.not_in(emulated_worker_ids()),
    )


def is_valid_record(run_secs: list[float] | None, instruction_kinds: list[str]) -> bool:
    """``IsValid`` on plain values: the same rule as ``valid_measurement``, for records outside the fleet's tables.

    ``tunehub.metaschedule.Database`` stores it with each user record (``db.user_records``).
    """
    if not instruction_kinds or instruction_kinds[0] == "EnterPostproc":
        return False
    return bool(run_secs) and any(s is not None and s != FAILED_STUB_SECS for s in run_secs)


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


def task_bests(session: Session, *, task_ids: Iterable[int]) -> dict[int, float]:
    """{task id: mean seconds of the best of its own measurements, by this policy}; tasks with none are absent.

    A job's progress per task (``db.jobs``): the same rule as the workload's best,
    over one task's candidates, so a job never shows a refuted, flagged-over-clean
    or pending-over-settled time that no bundle would serve.
    """
    ids = sorted(set(task_ids))
    if not ids:
        return {}
    ranked = (
        select(
            Candidate.task_id.label("task_id"),
            Measurement.mean_secs.label("mean_secs"),
            func.row_number().over(partition_by=Candidate.task_id, order_by=RANK_ORDER).label("rank"),
        )
        .join(Candidate, Candidate.id == Measurement.candidate_id)
        .where(Candidate.task_id.in_(ids), valid_measurement())
        .subquery()
    )
    rows = session.execute(select(ranked.c.task_id, ranked.c.mean_secs).where(ranked.c.rank == 1))
    return {r.task_id: float(r.mean_secs) for r in rows}


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
