"""Best configs: a MetaSchedule JSONDatabase zip, per job or per (model, target)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from db import jobs, ranking
from service.body_limits import json_depth
from service.deps import CurrentToken, SessionDep, SettingsDep, pause_transaction
from common.errors import BadInput, NotFound
from common.protocol import MAX_ID
from common.targets import canonical_target

router = APIRouter(prefix="/configs", tags=["configs"])

_ZIP = {200: {"content": {"application/zip": {}}, "description": "JSONDatabase files in a zip"}}


@router.get("", response_class=Response, responses=_ZIP)
def download_configs(
    session: SessionDep,
    settings: SettingsDep,
    _: CurrentToken,
    job: Annotated[int | None, Query(ge=1, le=MAX_ID, description="A job id.")] = None,
    model: Annotated[int | None, Query(ge=1, le=MAX_ID, description="A model id; needs target.")] = None,
    target: Annotated[
        str | None, Query(max_length=4096, description='Target JSON, e.g. {"kind":"llvm","num-cores":2}')
    ] = None,
) -> Response:
    """The fastest valid measurement per workload of the job (or of every job of the model on the target).

    Records come from every job on the same target key, not only this one: the
    fleet never forgets. 404 while nothing has been measured.
    """
    from tuner.configs import build_config_zip  # TVM: imported on first use

    if job is not None:
        target_json, target_key, ids = jobs.job_workloads(session, job_id=job)
        what, filename = f"job {job}", f"tunehub-configs-job{job}.zip"
    elif model is not None and target:
        if json_depth(target.encode()) > settings.max_json_depth:
            raise BadInput(f"query.target: JSON nested deeper than {settings.max_json_depth} levels")
        target_json, target_key = canonical_target(target)
        ids = jobs.model_workloads(session, model_id=model, target_key=target_key)
        if not ids:
            raise NotFound(f"model {model} has no jobs on target {target_key}; POST /api/v1/jobs first")
        what, filename = f"model {model} on {target_key}", f"tunehub-configs-model{model}.zip"
    else:
        raise BadInput("name a job (?job=ID) or a model and a target (?model=ID&target=<target JSON>)")
    records = ranking.best_records(session, target_key=target_key, workload_ids=ids)
    if not records:
        raise NotFound(f"nothing has been measured yet for {what}; try again once workers have reported")
    pause_transaction(session)  # replaying traces into the zip takes TVM time
    data = build_config_zip(records, target_json)
    return Response(
        content=data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
