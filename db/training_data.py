"""What the cost model learns from: a target key's measurements as plain records, and leave-one-model-out splits.

``cost_model.store`` replays and featurises these; the queries live here so
cost_model/ holds no SQL. A training row is either

- a **time**: a valid measurement by the one rule (``db.ranking.valid_measurement``:
  TVM's ``IsValid``, not refuted, not a confirmation's re-measurement, not
  emulated) that is also unflagged (disturbed timings would teach noise); or
- an **error the schedule caused** (build, run, crash, wrong output, timeout,
  or an old row with no kind), labelled the workload's worst: the search proposes
  such schedules, and a model that never saw one may rank it first (MetaSchedule's
  own ``XGBModel`` learns them as zero throughput too). Errors that say nothing of
  the schedule (``unsupported`` on this worker, ``rejected`` claims) are left out,
  as are errors of emulated workers and confirmations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from common.errors import BadInput, NotFound
from common.protocol import ErrorKind
from db.models import Candidate, Job, Measurement, Model, Task, Worker, Workload
from db.ranking import has_schedule_instruction, ranked_measurements, valid_measurement
from db.workers import emulated_worker_ids

NOT_THE_SCHEDULES_FAULT = (ErrorKind.unsupported.value, ErrorKind.rejected.value)
"""Error kinds that are never training labels: they say nothing about the schedule."""


@dataclass(frozen=True)
class TrainingRow:
    """One training measurement: its trace and mean seconds (None for an error the schedule caused)."""

    measurement_id: int
    workload_id: int
    mean_secs: float | None
    trace_json: str


def trainable() -> ColumnElement[bool]:
    """SQL, on ``Measurement`` joined to its ``Candidate``: the row is a time or an error to learn from."""
    schedule_error = and_(
        Measurement.mean_secs.is_(None),
        Measurement.error.is_not(None),
        or_(Measurement.error_kind.is_(None), Measurement.error_kind.not_in(NOT_THE_SCHEDULES_FAULT)),
        has_schedule_instruction(),
        Candidate.confirms_measurement_id.is_(None),
        Measurement.worker_id.not_in(emulated_worker_ids()),
    )
    return and_(Measurement.flagged.is_(False), or_(valid_measurement(), schedule_error))


def training_rows(
    session: Session, *, target_key: str, after_id: int = 0, upto_id: int | None = None, limit: int = 50_000,
    workload_ids: Sequence[int] | None = None, exclude_workload_ids: Sequence[int] | None = None,
    model_id: int | None = None,
) -> list[TrainingRow]:
    """Training rows of the key with ``after_id < id <= upto_id``: the newest ``limit``, oldest first.

    ``workload_ids`` keeps only those workloads, ``exclude_workload_ids`` drops those
    (under whichever model's job they were measured), ``model_id`` keeps only
    candidates of that model's jobs.
    """
    query = (
        select(Measurement.id, Measurement.workload_id, Measurement.mean_secs, Candidate.trace_json)
        .join(Candidate, Candidate.id == Measurement.candidate_id)
        .where(Measurement.target_key == target_key, Measurement.id > after_id, trainable())
        .order_by(Measurement.id.desc())
        .limit(limit)
    )
    if upto_id is not None:
        query = query.where(Measurement.id <= upto_id)
    if workload_ids is not None:
        query = query.where(Measurement.workload_id.in_(list(workload_ids)))
    if exclude_workload_ids:
        query = query.where(Measurement.workload_id.not_in(list(exclude_workload_ids)))
    if model_id is not None:
        query = query.join(Task, Task.id == Candidate.task_id).join(Job, Job.id == Task.job_id).where(
            Job.model_id == model_id)
    return [TrainingRow(*row) for row in session.execute(query).all()[::-1]]


def resolve_model(session: Session, *, ref: str) -> tuple[int, str]:
    """(id, name) of the model ``ref`` names: its id, its name, or a prefix of its sha256.

    NotFound when nothing matches, BadInput when a name or prefix matches several.
    """
    ref = ref.strip()
    if ref.isdigit():
        row = session.execute(select(Model.id, Model.name).where(Model.id == int(ref))).one_or_none()
        if row is not None:
            return int(row.id), row.name
    for cond in (Model.name == ref, Model.sha256.startswith(ref.lower()) if len(ref) >= 4 else None):
        if cond is None:
            continue
        rows = session.execute(select(Model.id, Model.name).where(cond).order_by(Model.id).limit(5)).all()
        if len(rows) > 1:
            raise BadInput(f"{ref!r} names {len(rows)} models ({', '.join(str(r.id) for r in rows)}): use an id")
        if rows:
            return int(rows[0].id), rows[0].name
    raise NotFound(f"no model {ref!r} (an id, a name or a sha256 prefix of 4+ characters)")


def model_workload_ids(session: Session, *, model_id: int) -> list[int]:
    """Workloads of any task of any job of the model, on any target key (what a leave-out must hide)."""
    return sorted(session.scalars(
        select(Task.workload_id).join(Job, Job.id == Task.job_id).where(Job.model_id == model_id).distinct()))


def models_measured_on(session: Session, *, target_key: str) -> list[tuple[int, str]]:
    """(id, name) of the models with a training row on the key under their own jobs, by id."""
    rows = session.execute(
        select(Model.id, Model.name)
        .where(select(Measurement.id)
               .join(Candidate, Candidate.id == Measurement.candidate_id)
               .join(Task, Task.id == Candidate.task_id).join(Job, Job.id == Task.job_id)
               .where(Job.model_id == Model.id, Measurement.target_key == target_key, trainable())
               .exists())
        .order_by(Model.id)
    ).all()
    return [(int(r.id), r.name) for r in rows]


def target_keys(session: Session) -> list[str]:
    """Every target key with a measurement, the busiest first."""
    return list(session.scalars(
        select(Measurement.target_key).group_by(Measurement.target_key).order_by(func.count().desc())))


def workload_modules(session: Session, *, workload_ids: Sequence[int]) -> dict[int, str]:
    """{workload id: IRModule JSON} of these workloads."""
    if not workload_ids:
        return {}
    return dict(session.execute(
        select(Workload.id, Workload.mod_json).where(Workload.id.in_(list(workload_ids)))).all())


def busiest_target_key(session: Session) -> str | None:
    """The target key with the most measurements (None on an empty database)."""
    return session.scalar(
        select(Measurement.target_key).group_by(Measurement.target_key).order_by(func.count().desc()).limit(1))


def target_of_key(session: Session, *, target_key: str) -> str:
    """A target JSON for the key: a worker's, or the key itself (it is the canonical target JSON)."""
    return session.scalar(select(Worker.target_json).where(Worker.target_key == target_key).limit(1)) or target_key


def workload_bests(session: Session, *, target_key: str, workload_ids: Sequence[int]) -> dict[int, float]:
    """{workload id: mean seconds of its best valid unflagged measurement on the key} (the labels' scale).

    The best by the one ranking policy (``db.ranking``), over the whole database.
    """
    ranked = ranked_measurements(session, target_key=target_key, workload_ids=workload_ids, unflagged_only=True)
    return {wid: best[0].mean_secs for wid, best in ranked.items()}
