"""A database that drops the tuner's connection mid-job does not fail the job: it is handed back."""

from __future__ import annotations

import threading

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.engine import db_now, session_scope
from db.job_claims import claim_job
from db.models import Job, Model
from common.settings import Settings
from tuner import job_runner


def _claimed_job(factory: sessionmaker[Session], owner: str) -> int:
    with session_scope(factory) as s:
        now = db_now(s)
        model = Model(name="m", sha256="d" * 64, format="onnx", content=b"", size_bytes=0, input_shapes_json="{}",
                      created_at=now)
        s.add(model)
        s.flush()
        s.add(Job(model_id=model.id, target_json='{"kind":"llvm"}', target_key='{"kind":"llvm"}', trials=8,
                  trials_per_round=4, status="queued", created_at=now))
    with session_scope(factory) as s:
        job_id = claim_job(s, owner=owner, grace_s=60)
    assert job_id is not None
    return job_id


def test_a_lost_connection_mid_job_hands_it_back_for_another_tuner(session_factory: sessionmaker[Session], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    job_id = _claimed_job(session_factory, "tuner-1")

    def connection_dropped(self, spec):  # type: ignore[no-untyped-def]
        raise OperationalError("SELECT ...", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(job_runner._JobRun, "_tune", connection_dropped)
    job_runner.run_job(job_id, settings=Settings(tuner_heartbeat_s=0.05), session_factory=session_factory,
                       owner="tuner-1", stop=threading.Event())
    with session_scope(session_factory) as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert (job.status, job.tuner_owner, job.error) == ("queued", None, None)
        # Another tuner (or this one, on its next poll) resumes it at once, without waiting out the grace.
        assert claim_job(s, owner="tuner-2", grace_s=60) == job_id
