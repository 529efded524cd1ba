"""The worker daemon: lease candidates, measure them in the sandbox, report results.

One loop on the calling thread, plus a heartbeat thread per batch::

    register -> loop: lease -> (no work: wait poll_s) | measure each candidate -> report it

Every candidate ends as a reported result (run_secs or error) unless the lease
is lost or the daemon stops; on stop the unfinished rest is released so other
workers can take it at once. Network trouble is retried with backoff; a token
the service rejects stops the daemon with a clear error.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import httpx

from tunehub import errors
from tunehub.protocol import (
    CandidateResult,
    CandidateWire,
    HeartbeatRequest,
    LeaseRequest,
    LeaseResponse,
    ReleaseRequest,
    ResultsReport,
    WorkerRegister,
)
from tunehub.targets import canonical_target, target_label
from workers.api import ServiceClient, Stopped, TransientError
from workers.detect import available_cores, detect_cpu_target, detect_hardware
from workers.sandbox_client import Sandbox, SandboxStartError

log = logging.getLogger("workers.daemon")

_LOST = (errors.LeaseLost, errors.Conflict, errors.NotFound)  # the lease is no longer ours
_AUTH = (errors.Unauthorized, errors.Forbidden)
MAX_SANDBOX_START_FAILURES = 3


class WorkerDaemon:
    """Serves one target for one service until ``stop()``; ``run()`` once per instance.

    ``build_timeout_s + run_timeout_s`` bounds one candidate in the sandbox
    (twice that the first time a sandbox sees a workload: it also builds and
    runs the untuned reference). ``number``/``repeat``/``min_repeat_ms`` are
    TVM's ``time_evaluator`` settings; the defaults are MetaSchedule's own.
    """

    def __init__(
        self,
        server_url: str,
        token: str,
        *,
        target: dict[str, Any] | None = None,
        name: str | None = None,
        max_candidates: int = 8,
        poll_s: float = 1.0,
        build_timeout_s: float = 60.0,
        run_timeout_s: float = 60.0,
        number: int = 3,
        repeat: int = 1,
        min_repeat_ms: int = 100,
        check: bool = True,
        heartbeat_s: float | None = None,
        http_timeout_s: float = 30.0,
        backoff_max_s: float = 30.0,
        sandbox_env: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.target: dict[str, Any] = dict(target) if target else detect_cpu_target()
        _, self.target_key = canonical_target(self.target)  # BadInput now, not after registering
        self.name = name or socket.gethostname()
        self.max_candidates = max_candidates
        self.poll_s = poll_s
        self.build_timeout_s = build_timeout_s
        self.run_timeout_s = run_timeout_s
        self.number, self.repeat, self.min_repeat_ms = number, repeat, min_repeat_ms
        self.check = check
        self.heartbeat_s = heartbeat_s
        self.worker_id: int | None = None
        self.measured = 0  # candidates reported, errors included
        self._stop = threading.Event()
        self._fatal: BaseException | None = None  # set by a side thread that must stop the daemon
        self._start_failures = 0
        self.api = ServiceClient(
            server_url, token, stop=self._stop, timeout_s=http_timeout_s, backoff_max_s=backoff_max_s, transport=transport
        )
        # TVM_NOTES §0: TVM uses 1 thread on 2 cores unless told; measure with what the target says.
        threads = int(self.target.get("num-cores") or available_cores())
        self.sandbox = Sandbox(target_kind=str(self.target["kind"]), num_threads=threads, env=sandbox_env)

    # --- lifecycle ------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run()`` to return soon; idempotent and safe from a signal handler.

        A measurement in flight is abandoned (its sandbox killed) and the rest
        of the batch released.
        """
        self._stop.set()
        self.sandbox.interrupt()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Block until ``stop()``. Raises ``Unauthorized``/``Forbidden`` if the token is
        rejected, ``BadInput`` if the service rejects the target, and
        ``SandboxStartError`` if measurements cannot run on this machine at all."""
        log.info("worker %r serving %s at %s", self.name, target_label(self.target), self.api.server_url)
        try:
            self._register()
            while not self._stop.is_set():
                lease = self._lease()
                if lease is None or lease.lease_id is None or not lease.candidates:
                    self._stop.wait(self.poll_s)
                    continue
                self._work(lease)
        except Stopped:
            pass
        except _AUTH as exc:
            self._fatal = exc
        finally:
            self._stop.set()
            self.sandbox.close()
            self.api.close()
        if self._fatal is not None:
            if isinstance(self._fatal, _AUTH):
                log.error("the service rejected this worker's token, stopping: %s", self._fatal)
            else:
                log.error("worker stopped: %s", self._fatal)
            raise self._fatal
        log.info("worker %r stopped after %d measurements", self.name, self.measured)

    # --- service calls ----------------------------------------------------------------

    def _register(self) -> None:
        body = WorkerRegister(name=self.name, hardware=detect_hardware(), target=self.target)
        worker = self.api.register(body)
        self.worker_id = worker.id
        log.info("registered as worker %d (target key %s)", worker.id, worker.target_key)

    def _lease(self) -> LeaseResponse | None:
        assert self.worker_id is not None
        try:
            return self.api.lease(LeaseRequest(worker_id=self.worker_id, max_candidates=self.max_candidates))
        except errors.NotFound as exc:  # the service forgot us (fresh database): register again
            log.warning("service does not know worker %d (%s); registering again", self.worker_id, exc)
            self._register()
        except _AUTH:
            raise
        except errors.TunehubError as exc:  # a 4xx for our own request: a bug somewhere, keep going
            log.error("lease request refused: %s", exc)
            self._stop.wait(self.api.backoff_max_s)
        return None

    def _release(self, lease_id: int, count: int) -> None:
        assert self.worker_id is not None
        try:
            self.api.release(lease_id, ReleaseRequest(worker_id=self.worker_id))
            log.info("released lease %d (%d candidates unmeasured)", lease_id, count)
        except (TransientError, errors.TunehubError) as exc:
            log.warning("could not release lease %d (%s); its candidates return when it expires", lease_id, exc)

    # --- one batch ----------------------------------------------------------------------

    def _work(self, lease: LeaseResponse) -> None:
        assert lease.lease_id is not None and self.worker_id is not None
        lease_id = lease.lease_id
        started = time.monotonic()
        interval = self.heartbeat_s or max(lease.ttl_s / 3.0, 0.1)
        done, lost = threading.Event(), threading.Event()
        beat = threading.Thread(
            target=self._heartbeat_loop, args=(lease_id, interval, done, lost), name=f"heartbeat-{lease_id}", daemon=True
        )
        beat.start()
        remaining = list(lease.candidates)
        errors_seen = 0
        try:
            while remaining and not self._stop.is_set() and not lost.is_set():
                result = self._measure(remaining[0], lease)
                if result is None or lost.is_set():
                    break  # interrupted by stop(), or no longer ours
                try:
                    self.api.report(lease_id, ResultsReport(worker_id=self.worker_id, results=[result]))
                except _LOST as exc:
                    log.warning("lease %d lost while reporting (%s); dropping the rest of the batch", lease_id, exc)
                    lost.set()
                    break
                remaining.pop(0)
                self.measured += 1
                errors_seen += result.error is not None
        except SandboxStartError as exc:
            self._start_failures += 1
            log.error("sandbox cannot start (%d in a row): %s", self._start_failures, exc)
            if self._start_failures >= MAX_SANDBOX_START_FAILURES:
                self._fatal = exc
                self._stop.set()
            else:
                self._stop.wait(min(self.api.backoff_max_s, 2.0**self._start_failures))
        finally:
            done.set()
            beat.join()
            if remaining and not lost.is_set():
                self._release(lease_id, len(remaining))
        if self._fatal is not None:
            raise Stopped()
        measured = len(lease.candidates) - len(remaining)
        log.info(
            "lease %d: %d/%d candidates measured (%d errors) in %.1f s",
            lease_id,
            measured,
            len(lease.candidates),
            errors_seen,
            time.monotonic() - started,
        )

    def _measure(self, cand: CandidateWire, lease: LeaseResponse) -> CandidateResult | None:
        """The candidate's result, or None if the daemon stopped under it."""
        request = {
            "workload_hash": cand.workload_hash,
            "mod_json": lease.workloads.get(cand.workload_hash),
            "trace": cand.trace,
            "target": lease.target or self.target,
            "number": self.number,
            "repeat": self.repeat,
            "min_repeat_ms": self.min_repeat_ms,
            "check": self.check,
        }
        timeout = self.build_timeout_s + self.run_timeout_s
        if not self.sandbox.knows(cand.workload_hash):
            timeout *= 2  # the untuned reference is built and run first
        measured = self.sandbox.measure(request, timeout)
        if measured.interrupted:
            return None
        self._start_failures = 0
        if measured.error:
            log.info("candidate %d: %s", cand.id, measured.error.splitlines()[0][:300])
        return CandidateResult(candidate_id=cand.id, run_secs=measured.run_secs, error=measured.error)

    def _heartbeat_loop(self, lease_id: int, interval: float, done: threading.Event, lost: threading.Event) -> None:
        """Keep the lease alive while the batch is measured; a crash here stops the daemon."""
        assert self.worker_id is not None
        try:
            while not done.wait(interval):
                try:
                    self.api.heartbeat(lease_id, HeartbeatRequest(worker_id=self.worker_id))
                except TransientError as exc:
                    log.warning("heartbeat for lease %d failed (%s); trying again in %.1f s", lease_id, exc, interval)
                except _LOST as exc:
                    log.warning("lease %d lost (%s); abandoning the batch", lease_id, exc)
                    lost.set()
                    return
        except _AUTH as exc:  # run() logs it as a rejected token and raises it
            self._fatal = exc
            lost.set()
            self.stop()
        except BaseException as exc:  # noqa: BLE001 - stop loudly rather than lose leases silently
            log.exception("heartbeat thread for lease %d crashed", lease_id)
            self._fatal = exc
            lost.set()
            self.stop()
