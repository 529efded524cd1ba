"""Jobs: "tune this model for this target with this many trials".

Creating a job splits the model into tasks here (so a model TVM cannot handle
is a 422 now, not a failed job later) and queues it; the tuner process picks
it up from the database.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from db import jobs, uploads, workloads
from service.deps import CurrentToken, PathId, SessionDep, SettingsDep, UserToken, pause_transaction
from common.errors import Forbidden
from common.protocol import MAX_ID, JobCreate, JobPublic, JobStatus, Role
from common.targets import canonical_target

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", status_code=201)
def create_job(body: JobCreate, session: SessionDep, settings: SettingsDep, token: UserToken) -> JobPublic:
    """201 with the queued job and its tasks.

    ``trials`` and ``time_budget_s`` may come alone or together: whichever is
    spent first ends the job. 422 for an unknown target or a model TVM cannot
    split, 404 for an unknown model.
    """
    from tuner.intake_sandbox import extract_in_sandbox

    pause_transaction(session)  # the first canonical_target in a process imports TVM (seconds)
    target_json, target_key = canonical_target(body.target)
    model = uploads.model_file(session, model_id=body.model_id)
    content, shapes = model.content, model.input_shapes
    pause_transaction(session)  # model intake below takes seconds of TVM work (in a limited child process)
    extracted = extract_in_sandbox(content, shapes, target_json, settings)
    ids = workloads.upsert_workloads(session, extracted=extracted)
    job_id = jobs.create_job(
        session,
        model_id=body.model_id,
        target_json=target_json,
        target_key=target_key,
        trials=body.resolved_trials(),
        trials_per_round=body.trials_per_round or settings.num_trials_per_iter,
        tasks=[(w.name, w.weight, ids[w.shash]) for w in extracted],
        retune=body.retune,
        time_budget_s=body.time_budget_s,
        owner_token_id=token.id,
    )
    return jobs.job_public(session, job_id=job_id)


@router.get("")
def list_jobs(
    session: SessionDep,
    _: CurrentToken,
    model_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[JobPublic]:
    """Newest first, with per-task progress."""
    return jobs.list_jobs(session, model_id=model_id, status=status, limit=limit, offset=offset)


@router.get("/{job_id}")
def get_job(job_id: PathId, session: SessionDep, _: CurrentToken) -> JobPublic:
    """The job, its budget and end reason, and per task: trials, best, share of model time and why."""
    return jobs.job_public(session, job_id=job_id)


@router.post("/{job_id}/cancel")
def cancel_job(job_id: PathId, session: SessionDep, token: UserToken) -> JobPublic:
    """Cancel a queued or running job (409 otherwise); its unmeasured candidates are withdrawn.

    Only the token that created the job, or an admin, may cancel it (403 otherwise).
    """
    owner = jobs.job_owner(session, job_id=job_id)
    if token.role is not Role.admin and owner != token.id:
        raise Forbidden(f"job {job_id} belongs to another token; only its owner or an admin may cancel it")
    return jobs.cancel_job(session, job_id=job_id)
