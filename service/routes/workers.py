"""Workers: a daemon registers the target it serves, then leases work for it."""

from __future__ import annotations

from fastapi import APIRouter

from db import workers
from service.deps import CurrentToken, SessionDep, WorkerToken, pause_transaction
from common.protocol import WorkerPublic, WorkerRegister
from common.targets import canonical_target

router = APIRouter(prefix="/workers", tags=["workers"])


@router.post("", status_code=201)
def register_worker(body: WorkerRegister, session: SessionDep, token: WorkerToken) -> WorkerPublic:
    """Register (or re-register after a restart: same name, token and target give the same id)."""
    pause_transaction(session)  # the first canonical_target in a process imports TVM (seconds)
    target_json, target_key = canonical_target(body.target)
    worker = workers.register_worker(
        session,
        name=body.name,
        token_id=token.id,
        hardware=body.hardware,
        target_json=target_json,
        target_key=target_key,
        emulated=body.emulated,
    )
    if body.calibration is not None:
        workers.set_worker_calibration(session, worker_id=worker.id, calibration=body.calibration)
    return workers.worker_public(workers.get_worker(session, worker_id=worker.id))


@router.get("")
def list_workers(session: SessionDep, _: CurrentToken) -> list[WorkerPublic]:
    return workers.list_workers(session)
