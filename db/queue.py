"""The queue operations: the database IS the queue (DESIGN.md).

Candidates move ``pending → leased → done`` (or ``cancelled``). A lease is one
transaction: pick pending rows for the worker's target with
``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite serialises writers with
``BEGIN IMMEDIATE``), stamp them with a new lease, return them. Finishing is a
compare-and-set on (candidate, lease, state): zero rows means the lease was
lost or the result was already stored, so a duplicate or late report never
counts twice. Expiry uses the database's clock.

A result counts only if it is believable (``db.plausibility``: else it is
stored as an error of kind ``rejected``), and one that would become a
workload's best is re-measured on another worker first (``db.confirmation``).
Storing a refused time as an error rather than answering 422 keeps the rest of
the report, closes the candidate (no endless re-lease) and leaves a record.

All functions are keyword-only and run inside the caller's ``session_scope``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Row, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from db import confirmation, plausibility
from db.confirmation import ConfirmPolicy
from db.engine import as_utc, db_now
from db.models import Candidate, Lease, Measurement, Worker, Workload
from common.errors import BadInput, LeaseLost, NotFound
from common.protocol import CandidateResult, CandidateState, ErrorKind, ResultsAck

# How stale a worker's last_seen_at may get before a lease stamps it again.
WORKER_SEEN_RESOLUTION_S = 5.0

# The stored values, for SQL; records carry CandidateState (a str enum, equal to these).
PENDING = CandidateState.pending.value
LEASED = CandidateState.leased.value
DONE = CandidateState.done.value
CANCELLED = CandidateState.cancelled.value

# The lease/report hot path runs these prebuilt Core statements on the tables: a
# statement built once memoizes its cache key and skips the ORM's compile and
# hydration steps, which were most of a lease's CPU time (bench/queue_throughput.py).
_cand = Candidate.__table__
_lease = Lease.__table__
# A confirmation candidate goes to any worker but the one it checks, and never to a suspect one.
_PICK = (
    select(_cand.c.id)
    .where(
        _cand.c.target_key == bindparam("key"),
        _cand.c.state == PENDING,
        or_(_cand.c.exclude_worker_id.is_(None), _cand.c.exclude_worker_id != bindparam("wid")),
    )
    .order_by(_cand.c.id)
    .limit(bindparam("n"))
    .with_for_update(skip_locked=True)
)
_PICK_UNTRUSTED = _PICK.where(_cand.c.confirms_measurement_id.is_(None))
_TAKE = (
    update(_cand)
    .where(_cand.c.id.in_(bindparam("ids", expanding=True)), _cand.c.state == PENDING)
    .values(state=LEASED, lease_id=bindparam("lease"), attempts=_cand.c.attempts + 1)
    .returning(*_cand.c)
)
_FINISH = (
    update(_cand)
    .where(_cand.c.id == bindparam("cid"), _cand.c.lease_id == bindparam("lid"), _cand.c.state == LEASED)
    .values(state=DONE)
    .returning(_cand.c.workload_id, _cand.c.target_key, _cand.c.confirms_measurement_id)
)
_NEW_LEASE = insert(_lease).returning(_lease.c.id)
_EXPIRED = select(_lease.c.id).where(_lease.c.expires_at < bindparam("now"), _lease.c.released_at.is_(None))
_LEASE_OWNER = select(_lease.c.worker_id).where(_lease.c.id == bindparam("lid"))
_TOUCH_WORKER = (
    update(Worker.__table__).where(Worker.__table__.c.id == bindparam("wid")).values(last_seen_at=bindparam("seen"))
)
_NEW_MEASUREMENT = insert(Measurement.__table__)


def enqueue_candidates(
    session: Session,
    *,
    task_id: int,
    workload_id: int,
    target_key: str,
    traces: Sequence[str],
    round: int,
    transferred: Sequence[bool] | None = None,
) -> list[int]:
    """Insert candidates as pending; returns their ids in the order of ``traces``.

    ``transferred`` (one flag per trace) marks schedules adapted from another workload of the family.
    """
    flags = list(transferred) if transferred is not None else [False] * len(traces)
    now = db_now(session)
    rows = [
        Candidate(
            task_id=task_id,
            workload_id=workload_id,
            target_key=target_key,
            trace_json=trace,
            round=round,
            state=PENDING,
            attempts=0,
            transferred=flag,
            created_at=now,
        )
        for trace, flag in zip(traces, flags, strict=True)
    ]
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows]


def requeue_expired(session: Session, *, now: datetime | None = None) -> int:
    """Put candidates of expired leases back to pending; returns how many."""
    now = now or db_now(session)
    expired_ids = list(session.scalars(_EXPIRED, {"now": now}))
    if not expired_ids:
        return 0
    moved = session.execute(
        update(Candidate)
        .where(Candidate.lease_id.in_(expired_ids), Candidate.state == LEASED)
        .values(state=PENDING, lease_id=None)
    ).rowcount
    session.execute(update(Lease).where(Lease.id.in_(expired_ids)).values(released_at=now))
    return moved or 0


def lease_candidates(
    session: Session,
    *,
    worker_id: int,
    target_key: str,
    max_count: int,
    ttl_s: float,
    seen_at: datetime | None = None,
    confirmer: bool = True,
) -> tuple[Lease | None, list[Row[Any]]]:
    """Claim up to ``max_count`` pending candidates for ``target_key``: (lease, candidate rows by id).

    The rows carry every candidate column as an attribute (``id``,
    ``workload_id``, ``trace_json``...). Returns (None, []) when nothing
    waits. Two concurrent callers never get the same candidate: rows are
    locked and skipped on PostgreSQL, and SQLite runs one writer at a time
    (``db.engine``). The worker's ``last_seen_at`` is stamped, unless
    ``seen_at`` (the caller's read of it) is younger than
    ``WORKER_SEEN_RESOLUTION_S``: a busy worker's leases skip that write.
    A worker that is not a ``confirmer`` (a suspect one) gets no confirmation candidates.
    """
    now = db_now(session)
    requeue_expired(session, now=now)
    pick = _PICK if confirmer else _PICK_UNTRUSTED
    ids = list(session.scalars(pick, {"key": target_key, "n": max_count, "wid": worker_id}))
    if seen_at is not None and seen_at.tzinfo is not None:  # a wire-side (aware) reading
        seen_at = seen_at.astimezone(timezone.utc).replace(tzinfo=None)
    if seen_at is None or now - seen_at >= timedelta(seconds=WORKER_SEEN_RESOLUTION_S):
        session.execute(_TOUCH_WORKER, {"wid": worker_id, "seen": now})
    if not ids:
        return None, []
    expires = now + timedelta(seconds=ttl_s)
    lease_id = session.execute(_NEW_LEASE, {"worker_id": worker_id, "created_at": now, "expires_at": expires}).scalar_one()
    # RETURNING hands back the leased rows in the same statement (no second SELECT).
    candidates = sorted(session.execute(_TAKE, {"ids": ids, "lease": lease_id}), key=lambda c: c.id)
    lease = Lease(id=lease_id, worker_id=worker_id, created_at=now, expires_at=expires, released_at=None)
    return lease, candidates


def _owned_lease(session: Session, *, lease_id: int, worker_id: int) -> None:
    owner = session.execute(_LEASE_OWNER, {"lid": lease_id}).scalar_one_or_none()
    if owner is None:
        raise NotFound(f"lease {lease_id} does not exist")
    if owner != worker_id:
        raise LeaseLost(f"lease {lease_id} belongs to worker {owner}, not {worker_id}")


def heartbeat(session: Session, *, lease_id: int, worker_id: int, ttl_s: float) -> datetime:
    """Extend a live lease; returns the new expiry (aware UTC, for the wire).

    Raises LeaseLost when it expired, was released, or is not the worker's.
    """
    _owned_lease(session, lease_id=lease_id, worker_id=worker_id)
    now = db_now(session)
    expires = now + timedelta(seconds=ttl_s)
    won = session.execute(
        update(Lease)
        .where(Lease.id == lease_id, Lease.released_at.is_(None), Lease.expires_at >= now)
        .values(expires_at=expires)
    ).rowcount
    if not won:
        raise LeaseLost(f"lease {lease_id} expired or was released; its candidates went back to the queue")
    session.execute(update(Worker).where(Worker.id == worker_id).values(last_seen_at=now))
    return as_utc(expires)


def _validate(result: CandidateResult) -> tuple[str | None, float | None, str | None]:
    """(run_secs_json, mean_secs, error) for one result; BadInput when it says neither."""
    if result.error is not None:
        return None, None, result.error[:4000]
    secs = result.run_secs
    if not secs:
        raise BadInput(f"candidate {result.candidate_id}: a result needs run_secs (non-empty) or an error")
    if not all(math.isfinite(s) and s > 0 for s in secs):
        raise BadInput(f"candidate {result.candidate_id}: run_secs must be positive finite seconds, got {secs}")
    return json.dumps(secs), sum(secs) / len(secs), None


def complete(
    session: Session,
    *,
    lease_id: int,
    worker_id: int,
    results: Sequence[CandidateResult],
    flag_all: bool = False,
    peak_flops: float | None = None,
    confirm: ConfirmPolicy | None = None,
    tvm_version: str | None = None,
) -> ResultsAck:
    """Store results of a lease; each candidate is accepted at most once.

    ``tvm_version`` (the worker's) is stamped on every stored measurement.

    A candidate counts only while it is still leased under this lease: results
    for candidates already measured, re-leased to another worker after expiry,
    or cancelled are ignored (listed in ``ignored``), never stored twice.
    A valid result is stored ``flagged`` when the worker flagged it or
    ``flag_all`` (the worker reported a degraded calibration with it).

    A time faster than ``peak_flops`` allows for its workload, TVM's failed
    stub, or an unchecked output is stored as a ``rejected`` error. Results of
    confirmation candidates settle the measurement they re-measured; new
    would-be bests are sent for confirmation under ``confirm``.
    """
    _owned_lease(session, lease_id=lease_id, worker_id=worker_id)
    validated = [(r.candidate_id, *_validate(r)) for r in results]
    flagged = {r.candidate_id for r in results if r.error is None and (r.flagged or flag_all)}
    kinds = {r.candidate_id: r.error_kind.value for r in results if r.error is not None and r.error_kind is not None}
    by_id = {r.candidate_id: r for r in results}
    flops_of: dict[int, float | None] = {}
    settling: list[tuple[int, int]] = []  # (candidate id, measurement it confirms)
    now = db_now(session)
    accepted: list[int] = []
    ignored: list[int] = []
    rows: list[dict[str, object]] = []
    for cid, run_secs_json, mean_secs, error in validated:
        # The compare-and-set returns what the measurement row needs: one statement, not two.
        won = session.execute(_FINISH, {"cid": cid, "lid": lease_id}).one_or_none()
        if won is None:
            ignored.append(cid)
            continue
        if mean_secs is not None:
            if won.workload_id not in flops_of:
                flops_of[won.workload_id] = session.execute(
                    select(Workload.flops).where(Workload.id == won.workload_id)
                ).scalar_one_or_none()
            reason = plausibility.rejection(by_id[cid], flops=flops_of[won.workload_id], peak=peak_flops)
            if reason is not None:
                run_secs_json, mean_secs, error = None, None, f"rejected: {reason}"
                kinds[cid] = ErrorKind.rejected.value
        if won.confirms_measurement_id is not None:
            settling.append((cid, won.confirms_measurement_id))
        rows.append(
            dict(
                candidate_id=cid,
                worker_id=worker_id,
                workload_id=won.workload_id,
                target_key=won.target_key,
                run_secs_json=run_secs_json,
                mean_secs=mean_secs,
                error=error,
                error_kind=kinds.get(cid),
                flagged=cid in flagged and mean_secs is not None,
                tvm_version=tvm_version,
                created_at=now,
            )
        )
        accepted.append(cid)
    if rows:
        session.execute(_NEW_MEASUREMENT, rows)
    if settling or (confirm is not None and confirm.enabled):
        _confirmations(session, worker_id=worker_id, rows=rows, settling=settling, policy=confirm or ConfirmPolicy())
    return ResultsAck(accepted=accepted, ignored=ignored)


def _confirmations(
    session: Session,
    *,
    worker_id: int,
    rows: list[dict[str, object]],
    settling: list[tuple[int, int]],
    policy: ConfirmPolicy,
) -> None:
    """Settle the confirmations among the stored rows, then queue confirmations for new would-be bests."""
    stored = {int(r["candidate_id"]): r for r in rows}  # type: ignore[call-overload]
    for cid, original in settling:
        row = stored[cid]
        confirmation.settle(
            session, confirms_measurement_id=original, confirmer_id=worker_id,
            mean_secs=row["mean_secs"], error_kind=row["error_kind"], policy=policy,  # type: ignore[arg-type]
        )
    settled = {cid for cid, _ in settling}
    fresh: dict[str, list[int]] = {}
    for cid, row in stored.items():
        if cid not in settled and row["mean_secs"] is not None and not row["flagged"]:
            fresh.setdefault(str(row["target_key"]), []).append(cid)
    for key, cids in fresh.items():
        confirmation.request_confirmations(
            session, worker_id=worker_id, target_key=key, candidate_ids=cids, policy=policy
        )


def release(session: Session, *, lease_id: int, worker_id: int) -> int:
    """Hand a lease back: its unfinished candidates are leasable again at once."""
    _owned_lease(session, lease_id=lease_id, worker_id=worker_id)
    now = db_now(session)
    moved = session.execute(
        update(Candidate)
        .where(Candidate.lease_id == lease_id, Candidate.state == LEASED)
        .values(state=PENDING, lease_id=None)
    ).rowcount
    session.execute(update(Lease).where(Lease.id == lease_id, Lease.released_at.is_(None)).values(released_at=now))
    return moved or 0


def cancel_candidates(session: Session, *, task_ids: Sequence[int]) -> int:
    """Withdraw the unmeasured candidates of some tasks (a cancelled job)."""
    if not task_ids:
        return 0
    return (
        session.execute(
            update(Candidate)
            .where(Candidate.task_id.in_(list(task_ids)), Candidate.state.in_([PENDING, LEASED]))
            .values(state=CANCELLED, lease_id=None)
        ).rowcount
        or 0
    )


def measurements_for(session: Session, *, candidate_ids: Sequence[int]) -> dict[int, Measurement]:
    """The stored measurements of these candidates, by candidate id (missing = not yet measured)."""
    if not candidate_ids:
        return {}
    rows = session.scalars(select(Measurement).where(Measurement.candidate_id.in_(list(candidate_ids))))
    return {m.candidate_id: m for m in rows}
