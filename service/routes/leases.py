"""Leases: workers pull candidates for their target, heartbeat, report, release.

Every call names the worker; only the token that registered it (or an admin)
may act for it. The queue rules (expiry, compare-and-set completion) live in
``db.queue``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from db import leases, metrics_queries, queue, workers
from db.confirmation import ConfirmPolicy
from db.plausibility import PeakPolicy, peak_flops
from service.metrics import MetricsDep
from service.deps import PathId, SessionDep, SettingsDep, WorkerToken, owned_worker
from common.protocol import (
    HeartbeatRequest,
    HeartbeatResponse,
    LeaseRequest,
    LeaseResponse,
    ReleaseRequest,
    ResultsAck,
    ResultsReport,
)

router = APIRouter(prefix="/leases", tags=["leases"])


def worker_tvm_version(hardware: dict[str, Any]) -> str | None:
    """The TVM version a worker reported at registration (``hardware["tvm"]``), if it reads as one."""
    version = hardware.get("tvm")
    return version if isinstance(version, str) and 0 < len(version) <= 64 else None


@router.post("")
def lease(
    body: LeaseRequest, session: SessionDep, settings: SettingsDep, token: WorkerToken, metrics: MetricsDep
) -> LeaseResponse:
    """Up to ``max_candidates`` (capped by the service) for the worker's target; ``lease_id`` null when none wait."""
    with metrics.lease_seconds.time():
        worker = owned_worker(session, token, body.worker_id)
        # Leasing sweeps expired leases back into the queue first: count those that still held work.
        expired = metrics_queries.expired_leases_holding_work(session)
        answer = leases.lease_batch(
            session,
            worker=worker,
            max_count=min(body.max_candidates, settings.max_lease_candidates),
            ttl_s=settings.lease_ttl_s,
        )
    metrics.leases_expired.inc(expired)
    return answer


@router.post("/{lease_id}/heartbeat")
def heartbeat(
    lease_id: PathId, body: HeartbeatRequest, session: SessionDep, settings: SettingsDep, token: WorkerToken
) -> HeartbeatResponse:
    """Extend the lease by the TTL; 409 ``lease_lost`` once it expired or was released."""
    owned_worker(session, token, body.worker_id)
    expires = queue.heartbeat(session, lease_id=lease_id, worker_id=body.worker_id, ttl_s=settings.lease_ttl_s)
    return HeartbeatResponse(lease_id=lease_id, expires_at=expires)


@router.post("/{lease_id}/results")
def report_results(
    lease_id: PathId, body: ResultsReport, session: SessionDep, settings: SettingsDep, token: WorkerToken,
    metrics: MetricsDep,
) -> ResultsAck:
    """Store results, each candidate once; duplicates and late reports come back in ``ignored``.

    Results come with the worker's calibration (optional): a result is stored
    ``flagged`` when the worker flagged it or its calibration says degraded,
    and the worker's row keeps the calibration for ``GET /workers``.

    The report is one transaction: one malformed result is a 422 and nothing
    of the report is stored. Implausible times are stored as ``rejected``
    errors; a suspect worker's results are all flagged; a would-be best is
    re-measured on another worker before it is served as confirmed.
    """
    with metrics.report_seconds.time():
        return _store_results(lease_id, body, session, settings, token)


def _store_results(
    lease_id: int, body: ResultsReport, session: SessionDep, settings: SettingsDep, token: WorkerToken
) -> ResultsAck:
    worker = owned_worker(session, token, body.worker_id)
    degraded = body.calibration is not None and body.calibration.status == "degraded"
    peak = peak_flops(worker.target, worker.target_key, PeakPolicy(settings.peak_gflops_per_core, settings.peak_gflops))
    ack = queue.complete(
        session, lease_id=lease_id, worker_id=body.worker_id, results=body.results,
        flag_all=degraded or worker.suspect_reason is not None, peak_flops=peak,
        confirm=ConfirmPolicy(settings.confirm_winners, settings.confirm_tolerance, settings.confirm_worker_seen_s),
        tvm_version=worker_tvm_version(worker.hardware),
    )
    if body.calibration is not None:
        workers.set_worker_calibration(session, worker_id=body.worker_id, calibration=body.calibration)
    return ack


@router.post("/{lease_id}/release")
def release(lease_id: PathId, body: ReleaseRequest, session: SessionDep, token: WorkerToken) -> dict[str, int]:
    """Hand the unfinished candidates back at once (a worker shutting down); ``{"released": n}``."""
    owned_worker(session, token, body.worker_id)
    return {"released": queue.release(session, lease_id=lease_id, worker_id=body.worker_id)}
