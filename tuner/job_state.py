"""What a running job keeps per task and per batch: ``TunedTask``, ``Batch``; and ``outcome_of``.

``outcome_of`` is the one place tuner/ reads a candidate row's result
(``db.job_claims.CandidateOutcome``), so a change to that row is mended here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.protocol import MeasurementOutcome
from db.job_claims import CandidateOutcome, TaskSpec
from tuner.search import Proposal, TaskSearch


@dataclass
class TunedTask:
    """A task being searched in this job, and its measurements so far."""

    spec: TaskSpec
    search: TaskSearch
    done: int = 0  # this job's measurements of the task
    valid: int = 0
    transfer_pending: bool = False  # new to the key: carry its family's bests over before its first batch


@dataclass
class Batch:
    """Candidates queued together (one task's, or those in flight when a job resumes), by candidate id."""

    number: int
    inflight: dict[int, tuple[TunedTask, Proposal | None]] = field(default_factory=dict)


def outcome_of(row: CandidateOutcome) -> MeasurementOutcome | None:
    """The candidate's measurement; None while it has none."""
    return row.outcome


def fmt_ms(secs: float | None) -> str:
    return "-" if secs is None else f"{secs * 1e3:.4g} ms"
