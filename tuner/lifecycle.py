"""A claimed job from start to end: ``JobLifecycle``, a context manager, and ``RunEnd``.

Inside ``with JobLifecycle(...) as life:`` a heartbeat thread stamps the job
(``db.job_claims.job_heartbeat`` every ``tuner_heartbeat_s``), independent of
how long a search round takes, and ``life.check()`` raises ``StopRun`` once the
job is no longer ours (cancelled, or reclaimed after we were silent too long) or
the tuner is stopping. Leaving the block settles the job, and ``life.end`` says how:

- the block returned: ``done`` (a job cancelled meanwhile keeps its status: ``lost``);
- ``StopRun``: ``stopped`` hands the job back to the queue (``release_job``) so
  another tuner resumes it at once; ``lost`` withdraws a cancelled job's
  unmeasured candidates and leaves the job alone;
- the database went away (``CONNECTION_LOST``): not the job's fault, so ``stopped``;
- any other exception: the job is marked ``failed`` with its repr, logged loudly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from enum import Enum
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from common.protocol import JobStatus
from common.settings import Settings
from db.engine import session_scope
from db.job_claims import JobSpec, finish_job, job_heartbeat, job_status, load_job, release_job
from db.queue import cancel_candidates
from tuner.errors import CONNECTION_LOST

log = logging.getLogger(__name__)


class RunEnd(str, Enum):
    """How a run of a job ended."""

    done = "done"  # budget spent or every task finished; the job is marked done
    stopped = "stopped"  # the tuner is stopping (or lost the database): the job went back to the queue
    lost = "lost"  # no longer ours: cancelled, or reclaimed by another tuner
    failed = "failed"  # an error in the search: the job is marked failed with it


class StopRun(Exception):
    """Leave the job's loop now: it is no longer ours (``lost``) or the tuner is stopping (``stopped``)."""

    def __init__(self, end: RunEnd):
        super().__init__(end.value)
        self.end = end


class JobLifecycle:
    """Heartbeat while the block runs; settle the job when it ends (see the module docstring)."""

    def __init__(self, spec: JobSpec, *, owner: str, factory: sessionmaker[Session], settings: Settings,
                 stop: threading.Event, trials_used: Callable[[], int] = lambda: 0) -> None:
        self.job_id = spec.id
        self.task_ids = [t.id for t in spec.tasks]
        self.owner = owner
        self.factory = factory
        self.interval = settings.tuner_heartbeat_s
        self.stop = stop
        self.trials_used = trials_used  # for the log lines only
        self.end: RunEnd | None = None
        self._lost = threading.Event()
        self._finished = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat_loop, name=f"job-{spec.id}-heartbeat", daemon=True)

    def __enter__(self) -> JobLifecycle:
        self._beat.start()
        return self

    def check(self) -> None:
        """Raise ``StopRun`` when the job is no longer ours or the tuner is stopping."""
        if self._lost.is_set():
            raise StopRun(RunEnd.lost)
        if self.stop.is_set():
            raise StopRun(RunEnd.stopped)

    def confirm_ours(self, session: Session) -> None:
        """Within ``session``'s transaction, make sure the job is still ours (a cancel that lands first wins)."""
        if not job_heartbeat(session, job_id=self.job_id, owner=self.owner):
            self._lost.set()
            raise StopRun(RunEnd.lost)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self._finished.set()
        self._beat.join()
        if exc is None:
            end = RunEnd.done
        elif isinstance(exc, StopRun):
            end = exc.end
        elif isinstance(exc, CONNECTION_LOST):
            log.warning("job %d: database connection lost (%s); handing the job back to resume it",
                        self.job_id, getattr(exc, "orig", exc))
            end = RunEnd.stopped
        elif isinstance(exc, Exception):  # the one guard: any search failure ends the job as failed, loudly
            log.error("job %d failed", self.job_id, exc_info=exc)
            self._fail(repr(exc))
            self.end = RunEnd.failed
            return True
        else:
            return False  # KeyboardInterrupt, SystemExit: not ours to swallow
        self.end = self._settle(end)
        return True

    # --- the heartbeat -----------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._finished.wait(self.interval):
            try:
                with session_scope(self.factory) as session:
                    alive = job_heartbeat(session, job_id=self.job_id, owner=self.owner)
            except CONNECTION_LOST as exc:  # a database hiccup: the grace period covers a missed beat
                log.warning("job %d: heartbeat failed, retrying: %s", self.job_id, exc)
                continue
            if not alive:
                self._lost.set()
                return

    # --- settling ------------------------------------------------------------------

    def _settle(self, end: RunEnd) -> RunEnd:
        if end is RunEnd.done:
            with session_scope(self.factory) as session:
                won = finish_job(session, job_id=self.job_id, owner=self.owner, status=JobStatus.done)
            return RunEnd.done if won else self._after_lost()
        if end is RunEnd.stopped:
            return self._release()
        return self._after_lost()

    def _fail(self, error: str) -> None:
        try:
            with session_scope(self.factory) as session:
                if finish_job(session, job_id=self.job_id, owner=self.owner, status=JobStatus.failed, error=error):
                    # Its queued work is now waste for the workers; measured results stay.
                    cancel_candidates(session, task_ids=[t.id for t in load_job(session, job_id=self.job_id).tasks])
        except CONNECTION_LOST:
            log.exception("job %d: could not mark it failed (another tuner will reclaim it after the grace period)",
                          self.job_id)

    def _release(self) -> RunEnd:
        try:
            with session_scope(self.factory) as session:
                released = release_job(session, job_id=self.job_id, owner=self.owner)
        except CONNECTION_LOST as exc:
            log.warning("job %d: could not hand it back (%s); it is reclaimed after the grace period",
                        self.job_id, getattr(exc, "orig", exc))
            return RunEnd.stopped
        if not released:
            return self._after_lost()
        log.info("job %d: tuner stopping, handed back to the queue after %d trials", self.job_id, self.trials_used())
        return RunEnd.stopped

    def _after_lost(self) -> RunEnd:
        with session_scope(self.factory) as session:
            status = job_status(session, job_id=self.job_id)
            if status == JobStatus.cancelled:
                withdrawn = cancel_candidates(session, task_ids=self.task_ids)
                log.info("job %d cancelled: stopped after %d trials, withdrew %d queued candidates",
                         self.job_id, self.trials_used(), withdrawn)
                return RunEnd.lost
        log.warning("job %d is no longer ours (status %s): stopped", self.job_id, status)
        return RunEnd.lost
