"""Ad-hoc runs: candidates from a user's own MetaSchedule script, measured by the fleet (``db.adhoc_runs``)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query

from common.protocol import RunCreate, RunCreated, RunResult, RunResults
from common.targets import canonical_target
from db import adhoc_runs
from service.deps import SessionDep, UserToken, pause_transaction

router = APIRouter(prefix="/runs", tags=["runs"])


@router.post("", status_code=201)
def create_run(body: RunCreate, session: SessionDep, token: UserToken) -> RunCreated:
    """201 with one pending candidate per scheduled module; 422 for an unknown target."""
    from common.tvm_json import args_info_json, workload_from_json, workload_hash

    pause_transaction(session)  # TVM work below (parsing modules) takes a while
    target_json, target_key = canonical_target(body.target)
    modules = []
    for text in body.modules:
        mod = workload_from_json(text)
        modules.append(adhoc_runs.AdhocModule(shash=workload_hash(mod), mod_json=text, args_info_json=args_info_json(mod)))
    run_id, ids = adhoc_runs.create_run(
        session, target_json=json.dumps(target_json, sort_keys=True), target_key=target_key, modules=modules,
        owner=f"token:{token.id}",
    )
    return RunCreated(run_id=run_id, candidate_ids=ids)


@router.get("/{run_id}/results")
def run_results(
    run_id: int, session: SessionDep, _: UserToken, ids: Annotated[list[int], Query(max_length=1024)]
) -> RunResults:
    """The state of these candidates and, once measured, run_secs or the error."""
    return RunResults(results=[
        RunResult(candidate_id=r.candidate_id, state=r.state, run_secs=r.run_secs, error=r.error)
        for r in adhoc_runs.run_results(session, candidate_ids=ids)
    ])


@router.post("/{run_id}/close")
def close_run(run_id: int, session: SessionDep, _: UserToken) -> dict[str, int]:
    """End the run; its unmeasured candidates are withdrawn (the script stopped waiting)."""
    return {"withdrawn": adhoc_runs.close_run(session, job_id=run_id)}
