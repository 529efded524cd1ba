"""Config bundles: a MetaSchedule JSONDatabase zip with a provenance manifest.

Three scopes: per job, per (model, target), and the best known for a target
(every workload the fleet has measured on it, like TVM's TopHub). Each serves
the one "best" (``db.ranking``) per workload among measurements made under this
service's TVM version (and old unstamped ones); ``include_other_tvm=true``
admits other versions' records too. The manifest says which versions were left
out and, per record, where it comes from (``db.provenance``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from db import jobs, provenance, ranking
from service.body_limits import json_depth
from service.deps import CurrentToken, SessionDep, SettingsDep, pause_transaction
from common.errors import BadInput, NotFound
from common.protocol import MAX_ID, TargetJSON
from common.settings import Settings
from common.targets import canonical_target

router = APIRouter(prefix="/configs", tags=["configs"])

_ZIP = {200: {"content": {"application/zip": {}}, "description": "JSONDatabase files and manifest.json in a zip"}}
TargetQuery = Annotated[
    str | None, Query(max_length=4096, description='Target JSON, e.g. {"kind":"llvm","num-cores":2}')
]
IncludeOtherTvm = Annotated[bool, Query(
    description="Admit records measured by workers of another TVM version (left out by default).")]


def _target(settings: Settings, target: str) -> tuple[TargetJSON, str]:
    if json_depth(target.encode()) > settings.max_json_depth:
        raise BadInput(f"query.target: JSON nested deeper than {settings.max_json_depth} levels")
    return canonical_target(target)


def _bundle(
    session: Session,
    *,
    target_json: TargetJSON,
    target_key: str,
    workload_ids: list[int],
    include_other_tvm: bool,
    scope: dict[str, Any],
    what: str,
    filename: str,
) -> Response:
    """The zip of the best record per workload, with the manifest; 404 while nothing has been measured."""
    from tuner.configs import build_config_zip, current_tvm_version  # TVM: imported on first use

    version = current_tvm_version()
    records = ranking.best_records(
        session, target_key=target_key, workload_ids=workload_ids, tvm_version=None if include_other_tvm else version
    )
    excluded = {} if include_other_tvm else provenance.other_tvm_versions(
        session, target_key=target_key, workload_ids=workload_ids, tvm_version=version)
    if not records:
        hint = f" (valid records of other TVM versions exist: {excluded}; ask with include_other_tvm=true)" if excluded else ""
        raise NotFound(f"nothing has been measured yet for {what} under TVM {version}{hint}")
    stamps = provenance.record_provenance(
        session, target_key=target_key, measurement_ids=[r.measurement_id for r in records if r.measurement_id])
    pause_transaction(session)  # replaying traces into the zip takes TVM time
    data = build_config_zip(records, target_json, provenance=stamps, scope={
        "bundle": scope, "include_other_tvm": include_other_tvm, "other_tvm_excluded": excluded,
    })
    return Response(
        content=data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("", response_class=Response, responses=_ZIP)
def download_configs(
    session: SessionDep,
    settings: SettingsDep,
    _: CurrentToken,
    job: Annotated[int | None, Query(ge=1, le=MAX_ID, description="A job id.")] = None,
    model: Annotated[int | None, Query(ge=1, le=MAX_ID, description="A model id; needs target.")] = None,
    target: TargetQuery = None,
    include_other_tvm: IncludeOtherTvm = False,
) -> Response:
    """The fastest valid measurement per workload of the job (or of every job of the model on the target).

    Records come from every job on the same target key, not only this one: the
    fleet never forgets. 404 while nothing has been measured.
    """
    if job is not None:
        target_json, target_key, ids = jobs.job_workloads(session, job_id=job)
        what, filename, scope = f"job {job}", f"tunehub-configs-job{job}.zip", {"kind": "job", "job": job}
    elif model is not None and target:
        target_json, target_key = _target(settings, target)
        ids = jobs.model_workloads(session, model_id=model, target_key=target_key)
        if not ids:
            raise NotFound(f"model {model} has no jobs on target {target_key}; POST /api/v1/jobs first")
        what, filename = f"model {model} on {target_key}", f"tunehub-configs-model{model}.zip"
        scope = {"kind": "model", "model": model}
    else:
        raise BadInput("name a job (?job=ID) or a model and a target (?model=ID&target=<target JSON>)")
    return _bundle(session, target_json=target_json, target_key=target_key, workload_ids=ids,
                   include_other_tvm=include_other_tvm, scope=scope, what=what, filename=filename)


@router.get("/best-known", response_class=Response, responses=_ZIP)
def best_known(
    session: SessionDep,
    settings: SettingsDep,
    _: CurrentToken,
    target: TargetQuery = None,
    include_other_tvm: IncludeOtherTvm = False,
) -> Response:
    """The best record of every workload the fleet has measured on the target, whatever the model (like TopHub)."""
    if not target:
        raise BadInput('name a target: ?target=<target JSON>, e.g. {"kind":"llvm","num-cores":2}')
    target_json, target_key = _target(settings, target)
    ids = provenance.measured_workloads(session, target_key=target_key)
    if not ids:
        raise NotFound(f"nothing has been measured on target {target_key} yet")
    return _bundle(session, target_json=target_json, target_key=target_key, workload_ids=ids,
                   include_other_tvm=include_other_tvm, scope={"kind": "best_known"},
                   what=f"target {target_key}", filename="tunehub-configs-best-known.zip")
