"""A database that drops the tuner's connection mid-job does not fail the job: it is handed back."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from common.protocol import JobStatus
from common.settings import Settings
from db.engine import session_scope
from db.job_claims import claim_job
from db.models import Job
from factories import add_job, add_task, add_workload
from tuner.job_runner import run_job
from tuner.lifecycle import RunEnd


def _claimed_job(factory: sessionmaker[Session], owner: str) -> int:
    with session_scope(factory) as s:
        add_task(s, job=add_job(s), workload=add_workload(s))
    with session_scope(factory) as s:
        job_id = claim_job(s, owner=owner, grace_s=60)
    assert job_id is not None
    return job_id


def test_a_lost_connection_mid_job_hands_it_back_for_another_tuner(session_factory: sessionmaker[Session]) -> None:
    job_id = _claimed_job(session_factory, "tuner-1")
    engine = session_factory.kw["bind"]
    dropped: list[str] = []

    def drop_once(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        """The driver's own error, as when the server goes away: at the job's first look at its candidates."""
        if not dropped and statement.lstrip().upper().startswith("SELECT") and "candidates" in statement:
            dropped.append(statement)
            raise engine.dialect.loaded_dbapi.OperationalError("server closed the connection unexpectedly")

    event.listen(engine, "before_cursor_execute", drop_once)
    try:
        end = run_job(job_id, settings=Settings(tuner_heartbeat_s=0.05), session_factory=session_factory,
                      owner="tuner-1", stop=threading.Event())
    finally:
        event.remove(engine, "before_cursor_execute", drop_once)
    assert dropped and end is RunEnd.stopped
    with session_scope(session_factory) as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert (job.status, job.tuner_owner, job.error) == (JobStatus.queued, None, None)
        # Another tuner (or this one, on its next poll) resumes it at once, without waiting out the grace.
        assert claim_job(s, owner="tuner-2", grace_s=60) == job_id
