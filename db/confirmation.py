"""Winners confirmed before they are served: a would-be best is re-measured on another worker.

When a stored result would become its workload's best on a target key, and
another worker of that key was seen recently (and is not suspect), the
measurement is marked ``pending`` and a confirmation candidate is queued: the
same trace, same task, leasable by any non-suspect worker but the one that
reported it (``Candidate.exclude_worker_id``). When its result comes back:

- the two means agree within ``tolerance`` (e.g. 1.5×): the original is
  ``confirmed``;
- the re-measurement is slower by more than that, or its output was wrong:
  the original is ``rejected`` (never served), with that worker's other
  results of the workload still pending, and its worker is marked suspect (shown by ``GET /workers``; its later results are flagged);
- the re-measurement is *faster* by more than that: the confirmer claims a
  time its peer could not reproduce, so the confirmer is the suspect one and
  the original goes back to unconfirmed (ranked as any result);
- the re-measurement failed otherwise (build, timeout...): the original is
  ``rejected``, nobody is accused.

Ranking (``db.ranking``) serves ``pending`` results only after every settled
one, and never ``rejected`` ones; confirmation measurements themselves are
never served (only the original's verdict counts). With a single worker for
the key nothing can be confirmed: results are served unconfirmed.

Functions are keyword-only and run inside the caller's session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from common.protocol import CandidateState, ErrorKind
from db.engine import db_now
from db.models import Candidate, Measurement, Worker


class Confirmation(str, Enum):
    """``measurements.confirmation``; None (no confirmation asked) is stored as NULL."""

    pending = "pending"
    confirmed = "confirmed"
    rejected = "rejected"


@dataclass(frozen=True)
class ConfirmPolicy:
    """``Settings.confirm_*``: whether to confirm, what counts as agreement, which peers count."""

    enabled: bool = True
    tolerance: float = 1.5
    peer_seen_s: float = 600.0


def not_rejected():  # type: ignore[no-untyped-def]
    """SQL: the measurement may be served (not refuted by a confirmation)."""
    return or_(Measurement.confirmation.is_(None), Measurement.confirmation != Confirmation.rejected.value)


def _has_peer(session: Session, *, worker_id: int, target_key: str, policy: ConfirmPolicy) -> bool:
    since = db_now(session) - timedelta(seconds=policy.peer_seen_s)
    peer = session.execute(
        select(Worker.id)
        .where(
            Worker.target_key == target_key,
            Worker.id != worker_id,
            Worker.suspect_reason.is_(None),
            Worker.emulated.is_(False),  # an emulated time cannot confirm a real one
            Worker.last_seen_at >= since,
        )
        .limit(1)
    ).first()
    return peer is not None


def _settled_best(
    session: Session, *, workload_id: int, target_key: str, exclude_candidates: Sequence[int]
) -> float | None:
    """The fastest settled (not pending, not refuted), unflagged mean of the workload stored before this report."""
    from db.ranking import has_schedule_instruction  # db.ranking builds on this module

    return session.execute(
        select(func.min(Measurement.mean_secs))
        .join(Candidate, Candidate.id == Measurement.candidate_id)
        .where(
            Measurement.workload_id == workload_id,
            Measurement.target_key == target_key,
            Measurement.mean_secs.is_not(None),
            Measurement.flagged.is_(False),
            Measurement.candidate_id.not_in(list(exclude_candidates)),
            Candidate.confirms_measurement_id.is_(None),
            has_schedule_instruction(),
            Measurement.confirmation.is_(None) | (Measurement.confirmation == Confirmation.confirmed.value),
        )
    ).scalar_one_or_none()


def request_confirmations(
    session: Session, *, worker_id: int, target_key: str, candidate_ids: Sequence[int], policy: ConfirmPolicy
) -> list[int]:
    """Mark the new results (of ``candidate_ids``) that beat the settled best pending; queue confirmations.

    Every such result waits (ranked after settled ones), but only the report's
    fastest per workload is re-measured: the rest are slower than it, so they
    can only matter if it is refuted, and then they stay pending, never served
    over a settled result. Returns the confirmation candidates' ids.
    """
    if not policy.enabled or not candidate_ids:
        return []
    from db.ranking import has_schedule_instruction  # db.ranking builds on this module

    rows = session.execute(
        select(Measurement.id, Measurement.workload_id, Measurement.mean_secs, Candidate.task_id,
               Candidate.trace_json, Candidate.round)
        .join(Candidate, Candidate.id == Measurement.candidate_id)
        .where(
            Measurement.candidate_id.in_(list(candidate_ids)),
            Measurement.mean_secs.is_not(None),
            Measurement.flagged.is_(False),
            Candidate.confirms_measurement_id.is_(None),
            has_schedule_instruction(),  # no tuning record (an ad-hoc run's empty trace) is ever served: no re-measuring
        )
        .order_by(Measurement.workload_id, Measurement.mean_secs, Measurement.id)
    ).all()
    if not rows or not _has_peer(session, worker_id=worker_id, target_key=target_key, policy=policy):
        return []
    now = db_now(session)
    queued: list[Candidate] = []
    best: dict[int, float | None] = {}
    for r in rows:  # by workload, fastest first
        first = r.workload_id not in best
        if first:
            best[r.workload_id] = _settled_best(
                session, workload_id=r.workload_id, target_key=target_key, exclude_candidates=candidate_ids
            )
        settled = best[r.workload_id]
        if settled is not None and r.mean_secs >= settled:
            continue
        session.execute(
            update(Measurement).where(Measurement.id == r.id).values(confirmation=Confirmation.pending.value)
        )
        if not first:
            continue
        queued.append(Candidate(
            task_id=r.task_id, workload_id=r.workload_id, target_key=target_key, trace_json=r.trace_json,
            round=r.round, state=CandidateState.pending.value, attempts=0, created_at=now,
            confirms_measurement_id=r.id, exclude_worker_id=worker_id,
        ))
    session.add_all(queued)
    session.flush()
    return [c.id for c in queued]


def settle(
    session: Session,
    *,
    confirms_measurement_id: int,
    confirmer_id: int,
    mean_secs: float | None,
    error_kind: str | None,
    policy: ConfirmPolicy,
) -> Confirmation | None:
    """Judge the original measurement by its re-measurement; returns the original's new state."""
    original = session.execute(
        select(Measurement.id, Measurement.mean_secs, Measurement.worker_id, Measurement.workload_id).where(
            Measurement.id == confirms_measurement_id
        )
    ).one_or_none()
    if original is None or original.mean_secs is None:
        return None
    verdict: Confirmation | None
    if mean_secs is not None:
        ratio = mean_secs / original.mean_secs
        if ratio > policy.tolerance:
            verdict = Confirmation.rejected
            _suspect(session, worker_id=original.worker_id, reason=(
                f"measurement {original.id}: reported {original.mean_secs:.3g} s, another worker measured the same "
                f"schedule at {mean_secs:.3g} s ({ratio:.2f}x slower)"))
        elif ratio < 1.0 / policy.tolerance:
            verdict = None
            _suspect(session, worker_id=confirmer_id, reason=(
                f"confirming measurement {original.id} ({original.mean_secs:.3g} s): reported {mean_secs:.3g} s, "
                f"{1 / ratio:.2f}x faster than the schedule's own worker could time it"))
        else:
            verdict = Confirmation.confirmed
    else:
        verdict = Confirmation.rejected
        if error_kind == ErrorKind.wrong_output.value:
            _suspect(session, worker_id=original.worker_id, reason=(
                f"measurement {original.id}: another worker found the schedule's output wrong"))
    session.execute(
        update(Measurement)
        .where(Measurement.id == original.id)
        .values(confirmation=verdict.value if verdict else None)
    )
    if verdict is Confirmation.rejected:  # its slower companions from the same worker fall with it
        session.execute(
            update(Measurement)
            .where(
                Measurement.worker_id == original.worker_id,
                Measurement.workload_id == original.workload_id,
                Measurement.confirmation == Confirmation.pending.value,
            )
            .values(confirmation=Confirmation.rejected.value)
        )
    return verdict


def _suspect(session: Session, *, worker_id: int, reason: str) -> None:
    """Mark a worker suspect (the first reason is kept)."""
    session.execute(
        update(Worker)
        .where(Worker.id == worker_id, Worker.suspect_reason.is_(None))
        .values(suspect_reason=reason[:2000])
    )


def is_suspect(session: Session, *, worker_id: int) -> bool:
    return session.execute(
        select(Worker.id).where(and_(Worker.id == worker_id, Worker.suspect_reason.is_not(None)))
    ).first() is not None
