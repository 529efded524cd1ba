"""The catalog: tokens, models, workloads, jobs and workers, and the best configs.

Everything the service stores or reports that is not the queue itself (that is
``db.queue``). Functions are keyword-only, take the caller's session (one
``session_scope`` per request) and never commit. What crosses into service/
is either a ``common.protocol`` model or, for the route code that needs the
row itself (a model's bytes, a worker's token), the ORM row.

Inserts that two service replicas may race on (a known admin token, the same
model bytes, a workload shared by two models) are idempotent: a unique key
decides, and the loser reads the winner's row instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from db import queue
from db.engine import db_now
from db.models import Candidate, Job, Measurement, Model, Task, Token, Worker, Workload
from db.records import BestRecord
from common.errors import BadInput, Conflict, NotFound
from common.protocol import (
    Calibration,
    CandidateWire,
    JobPublic,
    JobStatus,
    LeaseResponse,
    ModelPublic,
    Role,
    TaskPublic,
    WorkerPublic,
)

# --- tokens ---------------------------------------------------------------


def hash_token(raw: str) -> str:
    """The sha256 hex of a raw token: the only form a token is stored in.

    Tokens are 32 random bytes (``secrets.token_urlsafe(32)``), so a plain fast
    hash is enough: there is no dictionary to guess from, and no salt or slow
    KDF would add anything but latency to every request. Operator-chosen admin
    tokens (``TUNEHUB_ADMIN_TOKEN``) should be just as random.
    """
    return hashlib.sha256(raw.encode()).hexdigest()


def create_token(session: Session, *, name: str, role: Role | str) -> tuple[Token, str]:
    """A new random token; returns (row, raw). The raw token exists only in the return value."""
    raw = secrets.token_urlsafe(32)
    row = Token(name=name, role=Role(role).value, token_hash=hash_token(raw), created_at=db_now(session))
    session.add(row)
    session.flush()
    return row, raw


def ensure_token(session: Session, *, raw: str, name: str, role: Role | str) -> Token:
    """Store a known raw token once (the admin bootstrap); later calls return the same row.

    Several replicas starting at once race on the unique hash; the loser reads
    the winner's row. A revoked token stays revoked: an operator who revoked
    it meant it.
    """
    digest = hash_token(raw)
    existing = session.scalars(select(Token).where(Token.token_hash == digest)).one_or_none()
    if existing is not None:
        return existing
    row = Token(name=name, role=Role(role).value, token_hash=digest, created_at=db_now(session))
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return session.scalars(select(Token).where(Token.token_hash == digest)).one()
    return row


# Every request runs it: built once, so its cache key is computed once (see db/queue.py).
_LIVE_TOKEN = select(Token.__table__.c.id, Token.__table__.c.role).where(
    Token.__table__.c.token_hash == bindparam("digest"), Token.__table__.c.revoked_at.is_(None)
)


def verify_token(session: Session, *, raw: str) -> tuple[int, Role] | None:
    """(token id, role) for a live token; None for an unknown or revoked one."""
    row = session.execute(_LIVE_TOKEN, {"digest": hash_token(raw)}).one_or_none()
    return None if row is None else (row.id, Role(row.role))


def revoke_token(session: Session, *, token_id: int) -> None:
    """Revoke a token at once: every later request with it is 401. Revoking twice is a no-op."""
    if session.get(Token, token_id) is None:
        raise NotFound(f"token {token_id} does not exist")
    session.execute(
        update(Token).where(Token.id == token_id, Token.revoked_at.is_(None)).values(revoked_at=db_now(session))
    )


# --- models ---------------------------------------------------------------


def store_model(
    session: Session, *, name: str, content: bytes, input_shapes: dict[str, list[int]]
) -> tuple[Model, bool]:
    """Store model bytes once by sha256; returns (row, created).

    Uploading the same bytes again returns the stored row (created=False), so
    re-running a script does not fill the database. The same bytes with other
    input shapes are a Conflict: the shapes decide the workloads, and silently
    answering with the old ones would tune the wrong thing.
    """
    if not content:
        raise BadInput("the model file is empty")
    digest = hashlib.sha256(content).hexdigest()
    shapes_json = json.dumps(input_shapes, sort_keys=True)
    existing = _model_by_sha(session, digest)
    if existing is None:
        row = Model(
            name=name[:200],
            sha256=digest,
            format="onnx",
            content=content,
            size_bytes=len(content),
            input_shapes_json=shapes_json,
            created_at=db_now(session),
        )
        try:
            with session.begin_nested():
                session.add(row)
            return row, True
        except IntegrityError:  # another request stored the same bytes just now
            existing = _model_by_sha(session, digest)
            assert existing is not None
    if json.loads(existing.input_shapes_json) != json.loads(shapes_json):
        raise Conflict(
            f"these bytes are already stored as model {existing.id} with input shapes "
            f"{existing.input_shapes_json}, not {shapes_json}; use that model, or upload a copy "
            f"with the batch dimension fixed"
        )
    return existing, False


def _model_by_sha(session: Session, digest: str) -> Model | None:
    return session.scalars(select(Model).where(Model.sha256 == digest)).one_or_none()


def get_model(session: Session, *, model_id: int, with_content: bool = True) -> Model:
    """The model row (its bytes loaded only when asked); NotFound names the id."""
    row = session.get(Model, model_id, options=[] if with_content else [defer(Model.content)])
    if row is None:
        raise NotFound(f"model {model_id} does not exist")
    return row


def list_models(session: Session, *, limit: int = 100, offset: int = 0) -> list[ModelPublic]:
    """Newest first, without loading the bytes (models can be hundreds of MB)."""
    rows = session.scalars(
        select(Model).options(defer(Model.content)).order_by(Model.id.desc()).limit(limit).offset(offset)
    )
    return [model_public(r) for r in rows]


def model_public(row: Model, *, created: bool = False) -> ModelPublic:
    """The wire view; ``created`` is True only in the answer to the upload that stored it."""
    return ModelPublic(
        id=row.id,
        name=row.name,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        input_shapes=json.loads(row.input_shapes_json),
        created_at=row.created_at,
        created=created,
    )


# --- workloads ------------------------------------------------------------


class WorkloadLike(Protocol):
    """What ``upsert_workloads`` reads from ``tuner.intake.ExtractedWorkload``."""

    shash: str
    mod_json: str
    args_info_json: str
    flops: float | None


def upsert_workloads(session: Session, *, extracted: Iterable[WorkloadLike]) -> dict[str, int]:
    """Insert the workloads not stored yet; returns {structural hash: workload id} for all.

    One ``INSERT ... ON CONFLICT (shash) DO NOTHING``: two jobs extracting the
    same operator at once (two replicas on PostgreSQL) both succeed and share
    one row, which is what lets measurements carry over between models.
    """
    by_hash: dict[str, WorkloadLike] = {}
    for w in extracted:
        by_hash.setdefault(w.shash, w)
    if not by_hash:
        return {}
    now = db_now(session)
    rows = [
        {"shash": h, "mod_json": w.mod_json, "args_info_json": w.args_info_json, "flops": w.flops, "created_at": now}
        for h, w in by_hash.items()
    ]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the two supported backends are above
        raise NotImplementedError(f"upsert_workloads on {dialect}")
    session.execute(insert(Workload).values(rows).on_conflict_do_nothing(index_elements=["shash"]))
    found = session.execute(select(Workload.shash, Workload.id).where(Workload.shash.in_(list(by_hash))))
    return {shash: wid for shash, wid in found}


# --- jobs -----------------------------------------------------------------


def create_job(
    session: Session,
    *,
    model_id: int,
    target_json: dict[str, Any] | str,
    target_key: str,
    trials: int,
    trials_per_round: int,
    tasks: Sequence[tuple[str, int, int]],
    retune: bool = False,
) -> int:
    """A queued job and its tasks ``(name, weight, workload_id)``; returns the job id.

    The tuner picks queued jobs up from the database; nothing runs here. Two
    tasks on one workload (a hash shared by two fused ops) become one task with
    the weights summed, as MetaSchedule's own extraction does.
    """
    if not tasks:
        raise BadInput("the model has no operators to tune")
    merged: dict[int, tuple[str, int]] = {}
    for name, weight, workload_id in tasks:
        first_name, w = merged.get(workload_id, (name, 0))
        merged[workload_id] = (first_name, w + int(weight))
    text = target_json if isinstance(target_json, str) else json.dumps(target_json, sort_keys=True)
    job = Job(
        model_id=model_id,
        target_json=text,
        target_key=target_key,
        trials=trials,
        trials_per_round=trials_per_round,
        retune=retune,
        status=JobStatus.queued.value,
        created_at=db_now(session),
    )
    session.add(job)
    session.flush()
    session.add_all(
        Task(job_id=job.id, workload_id=wid, name=name[:300], weight=weight) for wid, (name, weight) in merged.items()
    )
    session.flush()
    return job.id


def job_public(session: Session, *, job_id: int) -> JobPublic:
    """A job with per-task progress; NotFound names the id."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return _jobs_public(session, [job])[0]


def list_jobs(
    session: Session,
    *,
    model_id: int | None = None,
    status: JobStatus | str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[JobPublic]:
    """Newest first, each with its tasks' progress (three queries in all, whatever the count)."""
    q = select(Job).order_by(Job.id.desc()).limit(limit).offset(offset)
    if model_id is not None:
        q = q.where(Job.model_id == model_id)
    if status is not None:
        q = q.where(Job.status == JobStatus(status).value)
    return _jobs_public(session, list(session.scalars(q)))


def _jobs_public(session: Session, jobs: Sequence[Job]) -> list[JobPublic]:
    """Progress of many jobs from one aggregate query over their tasks' measurements."""
    if not jobs:
        return []
    job_ids = [j.id for j in jobs]
    task_ids = select(Task.id).where(Task.job_id.in_(job_ids))
    stats = (
        select(
            Candidate.task_id.label("task_id"),
            func.count(Measurement.id).label("done"),
            func.count(Measurement.mean_secs).label("valid"),
            func.min(Measurement.mean_secs).label("best"),
        )
        .join(Measurement, Measurement.candidate_id == Candidate.id)
        .where(Candidate.task_id.in_(task_ids))
        .group_by(Candidate.task_id)
        .subquery()
    )
    rows = session.execute(
        select(
            Task.id,
            Task.job_id,
            Task.name,
            Task.weight,
            Workload.shash,
            Workload.flops,
            stats.c.done,
            stats.c.valid,
            stats.c.best,
        )
        .join(Workload, Workload.id == Task.workload_id)
        .outerjoin(stats, stats.c.task_id == Task.id)
        .where(Task.job_id.in_(job_ids))
        .order_by(Task.id)
    )
    tasks: dict[int, list[TaskPublic]] = {jid: [] for jid in job_ids}
    for r in rows:
        tasks[r.job_id].append(
            TaskPublic(
                id=r.id,
                name=r.name,
                workload_hash=r.shash,
                weight=r.weight,
                flops=r.flops,
                trials_done=r.done or 0,
                trials_valid=r.valid or 0,
                best_latency_s=r.best,
            )
        )
    return [
        JobPublic(
            id=j.id,
            model_id=j.model_id,
            status=JobStatus(j.status),
            target=json.loads(j.target_json),
            target_key=j.target_key,
            trials=j.trials,
            trials_done=sum(t.trials_done for t in tasks[j.id]),
            error=j.error,
            created_at=j.created_at,
            started_at=j.started_at,
            finished_at=j.finished_at,
            tasks=tasks[j.id],
        )
        for j in jobs
    ]


def cancel_job(session: Session, *, job_id: int) -> JobPublic:
    """Cancel a queued or running job and withdraw its unmeasured candidates.

    A compare-and-set on the status, so a job that finished meanwhile is a
    Conflict rather than being rewritten. Measurements already taken stay:
    they still count for best configs. The tuner sees the status and stops.
    """
    live = [JobStatus.queued.value, JobStatus.running.value]
    won = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(live))
        .values(status=JobStatus.cancelled.value, finished_at=db_now(session))
    ).rowcount
    if not won:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"job {job_id} does not exist")
        raise Conflict(f"job {job_id} is {job.status}; only a queued or running job can be cancelled")
    queue.cancel_candidates(session, task_ids=list(session.scalars(select(Task.id).where(Task.job_id == job_id))))
    session.expire_all()  # the update bypassed the identity map
    return job_public(session, job_id=job_id)


# --- workers --------------------------------------------------------------


def register_worker(
    session: Session,
    *,
    name: str,
    token_id: int | None,
    hardware: dict[str, Any],
    target_json: dict[str, Any] | str,
    target_key: str,
) -> Worker:
    """Register a worker, or return its row again when it restarts.

    A daemon registers at every start; (name, token, target key) identifies it,
    so a restart keeps its id and its leases instead of adding a row each time.
    The same name serving another target is another worker: its measurements
    compare with a different key.
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
    row.last_seen_at = now
    session.flush()
    return row


def get_worker(session: Session, *, worker_id: int) -> Worker:
    row = session.get(Worker, worker_id)
    if row is None:
        raise NotFound(f"worker {worker_id} is not registered; POST /api/v1/workers first")
    return row


def list_workers(session: Session, *, target_key: str | None = None) -> list[WorkerPublic]:
    q = select(Worker).order_by(Worker.id)
    if target_key is not None:
        q = q.where(Worker.target_key == target_key)
    return [worker_public(w) for w in session.scalars(q)]


def worker_public(row: Worker) -> WorkerPublic:
    calibration = Calibration.model_validate_json(row.calibration_json) if row.calibration_json else None
    return WorkerPublic(
        id=row.id, name=row.name, target=json.loads(row.target_json), target_key=row.target_key, calibration=calibration
    )


def set_worker_calibration(session: Session, *, worker_id: int, calibration: Calibration) -> None:
    """Keep the calibration a worker last reported (shown by ``GET /workers``)."""
    session.execute(
        update(Worker).where(Worker.id == worker_id).values(calibration_json=calibration.model_dump_json())
    )


# --- leases (the wire view of db.queue) -----------------------------------


def lease_batch(session: Session, *, worker: Worker, max_count: int, ttl_s: float) -> LeaseResponse:
    """Lease candidates for the worker's target and describe them for the wire.

    Each distinct workload's IRModule travels once per batch (``workloads``),
    not once per candidate: it is ~20× the size of a trace (TVM_NOTES §5).
    """
    lease, cands = queue.lease_candidates(
        session,
        worker_id=worker.id,
        target_key=worker.target_key,
        max_count=max_count,
        ttl_s=ttl_s,
        seen_at=worker.last_seen_at,
    )
    target = json.loads(worker.target_json)
    if lease is None:
        return LeaseResponse(lease_id=None, ttl_s=ttl_s, target=target)
    wls = _wire_workloads(session, {c.workload_id for c in cands})
    return LeaseResponse(
        lease_id=lease.id,
        expires_at=lease.expires_at,
        ttl_s=ttl_s,
        target=target,
        candidates=[
            CandidateWire(
                id=c.id,
                workload_hash=wls[c.workload_id].shash,
                trace=json.loads(c.trace_json),
                args_info=wls[c.workload_id].args_info,
            )
            for c in cands
        ],
        workloads={w.shash: w.mod_json for w in wls.values()},
    )


@dataclass(frozen=True)
class _WireWorkload:
    shash: str
    mod_json: str
    args_info: Any


# Per engine (so per database): {workload id: what a lease sends of it}. A workload row
# never changes once stored (upsert_workloads only inserts), so this saves a query and
# tens of KB of IRModule JSON per lease. Bounded; dropped with its engine.
_WORKLOAD_CACHE: weakref.WeakKeyDictionary[Any, OrderedDict[int, _WireWorkload]] = weakref.WeakKeyDictionary()
_WORKLOAD_CACHE_SIZE = 512
_WORKLOAD_CACHE_LOCK = threading.Lock()


def _wire_workloads(session: Session, ids: set[int]) -> dict[int, _WireWorkload]:
    engine = session.get_bind()
    with _WORKLOAD_CACHE_LOCK:
        cache = _WORKLOAD_CACHE.setdefault(engine, OrderedDict())
        found = {wid: cache[wid] for wid in ids if wid in cache}
    missing = ids - found.keys()
    if missing:
        rows = session.execute(
            select(Workload.id, Workload.shash, Workload.mod_json, Workload.args_info_json).where(
                Workload.id.in_(missing)
            )
        )
        loaded = {r.id: _WireWorkload(r.shash, r.mod_json, json.loads(r.args_info_json)) for r in rows}
        found.update(loaded)
        with _WORKLOAD_CACHE_LOCK:
            cache.update(loaded)
            while len(cache) > _WORKLOAD_CACHE_SIZE:
                cache.popitem(last=False)
    return found


# --- best configs ---------------------------------------------------------

FLAGGED_PENALTY = 1.05  # a flagged result must be >5 % faster to displace an unflagged one


def job_workloads(session: Session, *, job_id: int) -> tuple[dict[str, Any], str, list[int]]:
    """(target JSON, target key, workload ids) of a job's tasks."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    ids = list(session.scalars(select(Task.workload_id).where(Task.job_id == job_id).order_by(Task.id)))
    return json.loads(job.target_json), job.target_key, ids


def model_workloads(session: Session, *, model_id: int, target_key: str) -> list[int]:
    """Workload ids of every job of this model on this target key (empty when none)."""
    if session.get(Model, model_id, options=[defer(Model.content)]) is None:
        raise NotFound(f"model {model_id} does not exist")
    return list(
        session.scalars(
            select(Task.workload_id)
            .join(Job, Job.id == Task.job_id)
            .where(Job.model_id == model_id, Job.target_key == target_key)
            .distinct()
        )
    )


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
