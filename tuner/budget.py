"""A job's wall-clock budget: ``TimeBudget``, on the database's clock (or an injected one).

The budget counts from the job's ``started_at`` (stamped by the database when
the job was first claimed), so a job resumed by another tuner keeps its
deadline. The clock is injectable: the default reads the database's clock
(``db.engine.db_now``), the one every tuner shares; tests pass their own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from db.engine import db_now, session_scope
from db.job_schedule import job_budget

Clock = Callable[[], datetime]
"""Naive UTC now, comparable with the database's timestamps."""


def database_clock(factory: sessionmaker[Session]) -> Clock:
    """The database's clock, one query per reading."""

    def now() -> datetime:
        with session_scope(factory) as session:
            return db_now(session)

    return now


class TimeBudget:
    """``spent()`` once ``time_budget_s`` have passed since the job started; never without a budget."""

    def __init__(self, budget_s: float | None, started_at: datetime | None, clock: Clock) -> None:
        self.budget_s = budget_s
        self.clock = clock
        self.deadline: datetime | None = None
        if budget_s is not None:
            self.deadline = (started_at or clock()) + timedelta(seconds=budget_s)

    @classmethod
    def load(cls, factory: sessionmaker[Session], job_id: int, clock: Clock) -> TimeBudget:
        with session_scope(factory) as session:
            b = job_budget(session, job_id=job_id)
        return cls(b.time_budget_s, b.started_at, clock)

    def spent(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def left_s(self) -> float | None:
        """Seconds left (negative once spent); None without a budget."""
        return None if self.deadline is None else (self.deadline - self.clock()).total_seconds()
