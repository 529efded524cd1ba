"""What the tuner's scheduler decided about a job, stored and read back by the tuner: budgets, shares, reasons.

A job may carry a wall-clock budget (``time_budget_s``, counted from its
``started_at`` on the database's clock). While it runs, the tuner records each
task's share of the model's estimated time and why it has the trials it has
(``common.protocol.TaskReason``), and the model latency it estimates; when it
ends, why (``JobEndReason``). Writes are compare-and-set on the job's owner, so
a tuner that lost the job writes nothing. The wire view (``db.jobs``)
reads the same columns.

Keyword-only functions inside the caller's ``session_scope``, as in the rest of db/.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from common.errors import NotFound
from common.protocol import JobEndReason, JobStatus, TaskReason
from db.models import Job, Task


@dataclass(frozen=True)
class JobBudget:
    """A job's wall-clock budget (None: trials only) and when it started (the database's clock)."""

    time_budget_s: float | None
    started_at: datetime | None


def set_time_budget(session: Session, *, job_id: int, time_budget_s: float | None) -> None:
    """Give a job a wall-clock budget, or change it (None: trials only)."""
    session.execute(update(Job).where(Job.id == job_id).values(time_budget_s=time_budget_s))


def job_budget(session: Session, *, job_id: int) -> JobBudget:
    row = session.execute(select(Job.time_budget_s, Job.started_at).where(Job.id == job_id)).one_or_none()
    if row is None:
        raise NotFound(f"job {job_id} does not exist")
    return JobBudget(row.time_budget_s, row.started_at)


@dataclass(frozen=True)
class TaskChoice:
    """The scheduler's last word on one task."""

    share: float | None
    why: TaskReason


def _owned(job_id: int, owner: str):  # type: ignore[no-untyped-def]
    return (Job.id == job_id, Job.tuner_owner == owner, Job.status == JobStatus.running.value)


def record_schedule(session: Session, *, job_id: int, owner: str, estimated_latency_s: float | None,
                    tasks: Mapping[int, TaskChoice]) -> bool:
    """Store the scheduler's view of a running job; False (nothing written) when ``owner`` lost it."""
    won = session.execute(
        update(Job).where(*_owned(job_id, owner)).values(estimated_latency_s=estimated_latency_s)
        .execution_options(synchronize_session=False)
    ).rowcount
    if won != 1:
        return False
    for task_id, choice in tasks.items():
        session.execute(
            update(Task).where(Task.id == task_id, Task.job_id == job_id)
            .values(share=choice.share, why=choice.why.value)
            .execution_options(synchronize_session=False)
        )
    return True


def record_end_reason(session: Session, *, job_id: int, owner: str, reason: JobEndReason) -> bool:
    """Why the running job stops searching (written just before it is finished); False when not ours."""
    return session.execute(
        update(Job).where(*_owned(job_id, owner)).values(end_reason=reason.value)
        .execution_options(synchronize_session=False)
    ).rowcount == 1
