"""The queue operations: the database IS the queue (DESIGN.md).

Candidates move ``pending → leased → done`` (or ``cancelled``). A lease is one
transaction: pick pending rows for the worker's target with
``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite serialises writers with
``BEGIN IMMEDIATE``), stamp them with a new lease, return them. Finishing is a
compare-and-set on (candidate, lease, state): zero rows means the lease was
lost or the result was already stored, so a duplicate or late report never
counts twice. Expiry uses the database's clock.

All functions are keyword-only and run inside the caller's ``session_scope``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from db.engine import db_now
from db.models import Candidate, Lease, Measurement, Worker
from tunehub.errors import BadInput, LeaseLost, NotFound
from tunehub.protocol import CandidateResult, CandidateState, ResultsAck

PENDING = CandidateState.pending.value
LEASED = CandidateState.leased.value
DONE = CandidateState.done.value
CANCELLED = CandidateState.cancelled.value


def enqueue_candidates(
    session: Session,
    *,
    task_id: int,
    workload_id: int,
    target_key: str,
    traces: Sequence[str],
    round: int,
) -> list[int]:
    """Insert candidates as pending; returns their ids in the order of ``traces``."""
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
            created_at=now,
        )
        for trace in traces
    ]
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows]


def requeue_expired(session: Session, *, now: datetime | None = None) -> int:
    """Put candidates of expired leases back to pending; returns how many."""
    now = now or db_now(session)
    expired = select(Lease.id).where(Lease.expires_at < now, Lease.released_at.is_(None))
    expired_ids = list(session.scalars(expired))
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
    session: Session, *, worker_id: int, target_key: str, max_count: int, ttl_s: float
) -> tuple[Lease | None, list[Candidate]]:
    """Claim up to ``max_count`` pending candidates for ``target_key``.

    Returns (None, []) when nothing waits. Two concurrent callers never get the
    same candidate: rows are locked and skipped on PostgreSQL, and SQLite runs
    one writer at a time.
    """
    now = db_now(session)
    requeue_expired(session, now=now)
    ids = list(
        session.scalars(
            select(Candidate.id)
            .where(Candidate.target_key == target_key, Candidate.state == PENDING)
            .order_by(Candidate.id)
            .limit(max_count)
            .with_for_update(skip_locked=True)
        )
    )
    session.execute(update(Worker).where(Worker.id == worker_id).values(last_seen_at=now))
    if not ids:
        return None, []
    lease = Lease(worker_id=worker_id, created_at=now, expires_at=now + timedelta(seconds=ttl_s))
    session.add(lease)
    session.flush()
    session.execute(
        update(Candidate)
        .where(Candidate.id.in_(ids), Candidate.state == PENDING)
        .values(state=LEASED, lease_id=lease.id, attempts=Candidate.attempts + 1)
    )
    candidates = list(session.scalars(select(Candidate).where(Candidate.lease_id == lease.id).order_by(Candidate.id)))
    return lease, candidates


def _owned_lease(session: Session, *, lease_id: int, worker_id: int) -> Lease:
    lease = session.get(Lease, lease_id)
    if lease is None:
        raise NotFound(f"lease {lease_id} does not exist")
    if lease.worker_id != worker_id:
        raise LeaseLost(f"lease {lease_id} belongs to worker {lease.worker_id}, not {worker_id}")
    return lease


def heartbeat(session: Session, *, lease_id: int, worker_id: int, ttl_s: float) -> datetime:
    """Extend a live lease; raises LeaseLost when it expired, was released, or is not the worker's."""
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
    return expires


def _validate(result: CandidateResult) -> tuple[str | None, float | None, str | None]:
    """(run_secs_json, mean_secs, error) for one result; BadInput when it says neither or both."""
    if result.error is not None:
        return None, None, result.error[:4000]
    secs = result.run_secs
    if not secs:
        raise BadInput(f"candidate {result.candidate_id}: a result needs run_secs (non-empty) or an error")
    if not all(math.isfinite(s) and s > 0 for s in secs):
        raise BadInput(f"candidate {result.candidate_id}: run_secs must be positive finite seconds, got {secs}")
    return json.dumps(secs), sum(secs) / len(secs), None


def complete(
    session: Session, *, lease_id: int, worker_id: int, results: Sequence[CandidateResult]
) -> ResultsAck:
    """Store results of a lease; each candidate is accepted at most once.

    A candidate counts only while it is still leased under this lease: results
    for candidates already measured, re-leased to another worker after expiry,
    or cancelled are ignored (listed in ``ignored``), never stored twice.
    """
    _owned_lease(session, lease_id=lease_id, worker_id=worker_id)
    validated = [(r.candidate_id, *_validate(r)) for r in results]
    now = db_now(session)
    accepted: list[int] = []
    ignored: list[int] = []
    for cid, run_secs_json, mean_secs, error in validated:
        won = session.execute(
            update(Candidate)
            .where(and_(Candidate.id == cid, Candidate.lease_id == lease_id, Candidate.state == LEASED))
            .values(state=DONE)
        ).rowcount
        if not won:
            ignored.append(cid)
            continue
        cand = session.get(Candidate, cid)
        assert cand is not None
        session.add(
            Measurement(
                candidate_id=cid,
                worker_id=worker_id,
                workload_id=cand.workload_id,
                target_key=cand.target_key,
                run_secs_json=run_secs_json,
                mean_secs=mean_secs,
                error=error,
                created_at=now,
            )
        )
        accepted.append(cid)
    session.flush()
    return ResultsAck(accepted=accepted, ignored=ignored)


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
