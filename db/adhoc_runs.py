"""Ad-hoc runs: candidates measured for a user's own MetaSchedule script, outside any tuner job.

``tunehub.metaschedule.FleetRunner`` sends already scheduled modules; each
becomes a workload (the scheduled module itself) with one candidate whose trace
is empty (``[[],[]]``: the module as written), so workers lease, build and
measure it exactly as any other candidate. The candidates hang off an "adhoc"
job: ``running`` with its tuner heartbeat set far ahead, so no tuner ever claims
it, and a placeholder model (jobs need one). ``close_run`` ends the job and
withdraws what was not measured.

Their results are kept apart from the fleet's tuning records: the empty trace
fails ``TuningRecord::IsValid``, so ``db.ranking`` never serves one as a best,
and ``adhoc_candidate`` lets the fleet's MetaSchedule view (``SqlDatabase``)
leave them out of its record listing and count.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from common.protocol import CandidateState, JobStatus
from db.engine import db_now
from db.jobs import create_job
from db.models import Candidate, Job, Model, Task
from db.queue import cancel_candidates, enqueue_candidates, measurements_for
from db.workloads import upsert_workloads

ADHOC_OWNER = "adhoc"
EMPTY_TRACE = "[[],[]]"
_ADHOC_MODEL = b"tunehub ad-hoc runs: no model"
_NEVER_STALE = timedelta(days=365 * 100)


def adhoc_candidate() -> ColumnElement[bool]:
    """True for a ``Candidate`` of an ad-hoc run (its task belongs to an ad-hoc job, open or closed)."""
    return Candidate.task_id.in_(select(Task.id).join(Job, Job.id == Task.job_id).where(Job.tuner_owner == ADHOC_OWNER))


@dataclass(frozen=True)
class AdhocModule:
    shash: str
    mod_json: str
    args_info_json: str
    flops: float | None = None


@dataclass(frozen=True)
class AdhocResult:
    """A candidate's state and, once measured, its outcome."""

    candidate_id: int
    state: CandidateState
    run_secs: list[float] | None
    error: str | None


def _placeholder_model(session: Session) -> int:
    sha = hashlib.sha256(_ADHOC_MODEL).hexdigest()
    found = session.scalar(select(Model.id).where(Model.sha256 == sha))
    if found is not None:
        return int(found)
    model = Model(name="adhoc", sha256=sha, format="none", content=_ADHOC_MODEL, size_bytes=len(_ADHOC_MODEL),
                  input_shapes_json="{}", created_at=db_now(session))
    session.add(model)
    session.flush()
    return model.id


def create_run(
    session: Session, *, target_json: str, target_key: str, modules: Sequence[AdhocModule], owner: str
) -> tuple[int, list[int]]:
    """(job id, candidate ids in the order of ``modules``): one pending candidate per scheduled module."""
    ids = upsert_workloads(session, extracted=modules)
    job_id = create_job(
        session, model_id=_placeholder_model(session), target_json=target_json, target_key=target_key,
        trials=len(modules), trials_per_round=len(modules),
        tasks=[(f"adhoc:{owner}"[:300], 1, ids[m.shash]) for m in modules],
    )
    now = db_now(session)
    session.execute(update(Job).where(Job.id == job_id).values(
        status=JobStatus.running.value, tuner_owner=ADHOC_OWNER, tuner_heartbeat_at=now + _NEVER_STALE, started_at=now,
    ))
    job = session.get(Job, job_id)
    assert job is not None
    task_of = {t.workload_id: t.id for t in job.tasks}
    cids = [
        enqueue_candidates(session, task_id=task_of[ids[m.shash]], workload_id=ids[m.shash], target_key=target_key,
                           traces=[EMPTY_TRACE], round=0)[0]
        for m in modules
    ]
    return job_id, cids


def run_results(session: Session, *, candidate_ids: Sequence[int]) -> list[AdhocResult]:
    states = dict(session.execute(select(Candidate.id, Candidate.state).where(Candidate.id.in_(list(candidate_ids)))).all())
    measured = measurements_for(session, candidate_ids=candidate_ids)
    out = []
    for cid in candidate_ids:
        m = measured.get(cid)
        secs = None
        if m is not None and m.run_secs_json:
            secs = [float(s) for s in json.loads(m.run_secs_json)]
        out.append(AdhocResult(candidate_id=cid, state=CandidateState(states.get(cid, CandidateState.cancelled.value)),
                               run_secs=secs, error=None if m is None else m.error))
    return out


def close_run(session: Session, *, job_id: int) -> int:
    """End an ad-hoc job (done); returns how many unmeasured candidates were withdrawn."""
    job = session.get(Job, job_id)
    if job is None or job.tuner_owner != ADHOC_OWNER:
        return 0
    withdrawn = cancel_candidates(session, task_ids=[t.id for t in job.tasks])
    job.status, job.finished_at = JobStatus.done.value, db_now(session)
    return withdrawn
