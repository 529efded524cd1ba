"""The tuner process: claims jobs from the database and runs them, ``TunerDaemon``.

``tunehub tuner`` (and ``tunehub serve`` in embedded mode) runs one. Several may
share a PostgreSQL database: claiming is a compare-and-set
(``db.job_claims.claim_job``), and a job whose tuner went silent for
``tuner_grace_s`` is claimed again by whichever tuner polls first and resumed.

The loop (procrastinate's habit): claim while there is room for another job,
else wait for "stop, or the next poll". Each job runs in its own named thread;
an exception escaping a job is logged and marks the job failed, and the daemon
carries on with the others. ``stop()`` is idempotent and safe from a signal
handler; ``run()`` returns once every job thread has handed its job back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from db.engine import make_engine, make_sessionmaker, session_scope
from db.job_claims import claim_job, finish_job
from db.migrate import upgrade
from common.protocol import JobStatus
from common.settings import Settings
from tuner.errors import CONNECTION_LOST
from tuner.job_runner import run_job
from tuner.search import SearchConfig

log = logging.getLogger(__name__)


class TunerDaemon:
    """Claims jobs and runs up to ``settings.tuner_max_jobs`` of them at once until ``stop()``."""

    def __init__(
        self, settings: Settings, *, owner: str | None = None, search_config: SearchConfig | None = None
    ) -> None:
        self.settings = settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.search_config = search_config
        self._stop = threading.Event()
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

    @property
    def running_jobs(self) -> list[int]:
        """Ids of the jobs this daemon is running now."""
        with self._lock:
            return [job_id for job_id, t in self._threads.items() if t.is_alive()]

    def stop(self) -> None:
        """Ask the daemon and its jobs to stop (idempotent; jobs go back to the queue)."""
        self._stop.set()

    def run(self) -> None:
        """Block, claiming and running jobs, until ``stop()``; then wait for the job threads."""
        url = self.settings.resolved_database_url()
        if url.startswith("sqlite"):
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(url)  # the service migrates too; idempotent
        engine = make_engine(url, **self.settings.pool_options())
        factory = make_sessionmaker(engine)
        log.info("tuner %s polling for jobs (up to %d at once)", self.owner, self.settings.tuner_max_jobs)
        try:
            while not self._stop.is_set():
                self._reap()
                if len(self.running_jobs) < self.settings.tuner_max_jobs and self._claim_and_start(factory):
                    continue  # there may be more waiting: claim again at once
                self._stop.wait(self.settings.tuner_poll_s)
        finally:
            self._stop.set()
            with self._lock:
                threads = list(self._threads.values())
            for thread in threads:
                thread.join()
            engine.dispose()
            log.info("tuner %s stopped", self.owner)

    def _reap(self) -> None:
        with self._lock:
            for job_id in [j for j, t in self._threads.items() if not t.is_alive()]:
                del self._threads[job_id]

    def _claim_and_start(self, factory) -> bool:  # type: ignore[no-untyped-def]
        try:
            with session_scope(factory) as session:
                job_id = claim_job(session, owner=self.owner, grace_s=self.settings.tuner_grace_s,
                                   exclude=self.running_jobs)
        except CONNECTION_LOST as exc:  # the database is away for a moment: try again next poll
            log.warning("claiming a job failed: %s", exc)
            return False
        if job_id is None:
            return False
        log.info("tuner %s claimed job %d", self.owner, job_id)
        thread = threading.Thread(target=self._job_main, args=(factory, job_id), name=f"tuner-job-{job_id}", daemon=True)
        with self._lock:
            self._threads[job_id] = thread
        thread.start()
        return True

    def _job_main(self, factory, job_id: int) -> None:  # type: ignore[no-untyped-def]
        try:
            run_job(
                job_id,
                settings=self.settings,
                session_factory=factory,
                owner=self.owner,
                stop=self._stop,
                search_config=self.search_config,
            )
        except Exception as exc:  # noqa: BLE001  (run_job handles search errors; this is the last net)
            log.exception("job %d crashed", job_id)
            try:
                with session_scope(factory) as session:
                    finish_job(session, job_id=job_id, owner=self.owner, status=JobStatus.failed, error=repr(exc))
            except CONNECTION_LOST:
                log.exception("job %d: could not mark it failed", job_id)
