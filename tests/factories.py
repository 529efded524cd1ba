"""Rows for tests, written the way the service's intake and a worker's report write them.

One place builds models, workloads, jobs, tasks, workers, candidates and
measurements, so a schema change is mended here once. Each function takes an
open session (``session_scope``), flushes, and returns the row.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.protocol import CandidateState, ErrorKind, JobStatus
from db.engine import db_now
from db.models import Candidate, Job, Measurement, Model, Task, Worker, Workload


SCHEDULE_TRACE = '[[["GetSBlock",[],["root","main"],["b0"]]],[]]'
"""The smallest trace TVM counts as a tuning record (``TuningRecord::IsValid`` wants an instruction).

The empty trace ``[[],[]]`` builds and measures like any schedule but is never a
record (``db.ranking``); tests that expect a "best" use this one. It only looks
up the root block, so it replays on every TE-made workload ("main")."""


def _flushed(session: Session, row: Any) -> Any:
    session.add(row)
    session.flush()
    return row


def add_model(session: Session, *, name: str = "m", content: bytes = b"", shapes: dict[str, list[int]] | None = None) -> Model:
    """A model row with a unique sha256 (the bytes are not parsed)."""
    return _flushed(session, Model(
        name=name, sha256=uuid.uuid4().hex * 2, format="onnx", content=content, size_bytes=len(content),
        input_shapes_json=json.dumps(shapes or {}), created_at=db_now(session)))


def add_workload(session: Session, *, mod: Any = None, shash: str | None = None, flops: float | None = None,
                 family: str | None = None) -> Workload:
    """A workload from a real IRModule (``mod``), or a placeholder with a unique hash; reused if it exists."""
    if mod is not None:
        from common.tvm_json import args_info_json, workload_hash, workload_to_json

        shash = workload_hash(mod)
        existing = session.scalar(select(Workload).where(Workload.shash == shash))
        if existing is not None:
            return existing
        mod_json, args = workload_to_json(mod), args_info_json(mod)
    else:
        shash = shash or uuid.uuid4().hex[:24]
        mod_json, args = json.dumps(shash), "[]"
    return _flushed(session, Workload(shash=shash, mod_json=mod_json, args_info_json=args, flops=flops,
                                      family=family, created_at=db_now(session)))


def add_job(session: Session, *, model: Model | None = None, target: dict[str, Any] | None = None,
            trials: int = 8, per_round: int = 4, retune: bool = False,
            status: JobStatus = JobStatus.queued, key: str | None = None) -> Job:
    """A job on ``target`` (canonicalised; default a 2-core llvm CPU) for ``model`` (a new one by default).

    ``key`` stores that target key as given instead (no TVM import; ``target`` then defaults to ``{}``).
    """
    if key is None:
        from common.targets import canonical_target

        canonical, key = canonical_target(target or {"kind": "llvm", "num-cores": 2})
    else:
        canonical = target or {}
    model = model or add_model(session)
    return _flushed(session, Job(
        model_id=model.id, target_json=json.dumps(canonical), target_key=key, trials=trials,
        trials_per_round=per_round, retune=retune, status=JobStatus(status).value, created_at=db_now(session)))


def add_task(session: Session, *, job: Job, workload: Workload, name: str = "task", weight: int = 1) -> Task:
    return _flushed(session, Task(job_id=job.id, workload_id=workload.id, name=name, weight=weight))


def add_worker(session: Session, *, target_key: str, name: str = "w", target_json: str = "{}") -> Worker:
    now = db_now(session)
    return _flushed(session, Worker(name=name, target_json=target_json, target_key=target_key,
                                    registered_at=now, last_seen_at=now))


def add_measurement(session: Session, *, task: Task, worker: Worker, trace_json: str,
                    run_secs: list[float] | None = None, error: str | None = None, flagged: bool = False,
                    error_kind: ErrorKind | None = None, round: int = 0) -> Measurement:
    """A done candidate of ``task`` and its measurement (``run_secs`` or ``error``) by ``worker``."""
    job = session.get(Job, task.job_id)
    now = db_now(session)
    cand = _flushed(session, Candidate(task_id=task.id, workload_id=task.workload_id, target_key=job.target_key,
                                       trace_json=trace_json, round=round, state=CandidateState.done.value,
                                       attempts=1, created_at=now))
    return _flushed(session, Measurement(
        candidate_id=cand.id, worker_id=worker.id, workload_id=task.workload_id, target_key=job.target_key,
        run_secs_json=json.dumps(run_secs) if run_secs else None,
        mean_secs=sum(run_secs) / len(run_secs) if run_secs else None, error=error,
        error_kind=error_kind.value if error_kind else None, flagged=flagged, created_at=now))
