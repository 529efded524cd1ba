"""The worker daemon: lease candidates, measure them in the sandbox, report results.

One loop on the calling thread, plus a heartbeat thread per batch::

    register -> start the runner, calibrate -> loop: lease -> (no work: wait poll_s)
        | build the batch in parallel, report build errors
        | check and time each built candidate, report it (with the calibration)

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

from common import errors
from common.client import Stopped, TunehubClient
from common.protocol import (
    Calibration,
    CandidateResult,
    HeartbeatRequest,
    LeaseRequest,
    LeaseResponse,
    ReleaseRequest,
    ResultsReport,
    WorkerRegister,
)
from common.targets import canonical_target, target_label
from workers.detect import (
    NO_CUDA_COMPILER,
    available_cores,
    detect_cpu_target,
    detect_hardware,
    host_arch,
    runs_here,
)
from workers.measure import Item, Measurer
from workers.options import WorkerOptions
from workers.sandbox_client import SandboxStartError

log = logging.getLogger("workers.daemon")

_LOST = (errors.LeaseLost, errors.Conflict, errors.NotFound)  # the lease is no longer ours
_AUTH = (errors.Unauthorized, errors.Forbidden)
MAX_SANDBOX_START_FAILURES = 3


class WorkerDaemon:
    """Serves one target on one device for one service until ``stop()``; ``run()`` once per instance.

    ``options`` say how it leases and measures (``workers.options``). The runner's
    threads are pinned to ``cpus`` (default: the first ``num-cores`` CPUs this
    process may use; ``options.pin`` off leaves them free).
    """

    def __init__(
        self,
        server_url: str,
        token: str,
        options: WorkerOptions | None = None,
        *,
        target: dict[str, Any] | None = None,
        name: str | None = None,
        hardware: dict[str, Any] | None = None,
        cpus: list[int] | None = None,
        cuda_compiler: str | None = None,
        sandbox_env: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.options = options = options or WorkerOptions()
        self.target: dict[str, Any] = dict(target) if target else detect_cpu_target(len(cpus) if cpus else None)
        _, self.target_key = canonical_target(self.target)  # BadInput now, not after registering
        kind = str(self.target["kind"])
        if not runs_here(self.target):
            raise errors.BadInput(
                f"this {host_arch()} machine cannot run code built for {target_label(self.target)}; "
                "run the worker on that hardware (cross builds are for tests and build hosts)"
            )
        if kind == "cuda" and not cuda_compiler:
            raise errors.BadInput(NO_CUDA_COMPILER)
        self.name = name or socket.gethostname()
        self.hardware = hardware
        self.worker_id: int | None = None
        self.measured = 0  # candidates reported, errors included
        self._stop = threading.Event()
        self._fatal: BaseException | None = None  # set by a side thread that must stop the daemon
        self._start_failures = 0
        self._sent_calibration: Calibration | None = None  # the last one the service acknowledged
        self.api = TunehubClient(
            server_url,
            token,
            stop=self._stop,
            timeout_s=options.http_timeout_s,
            connect_timeout_s=10.0,
            backoff_max_s=options.backoff_max_s,
            transport=transport,
            user_agent="tunehub-worker",
        )
        cores = available_cores()
        if kind == "cuda":
            threads = 1  # the host side only launches kernels
        else:
            # TVM_NOTES §0: TVM uses 1 thread on 2 cores unless told; measure with what the target says.
            threads = len(cpus) if cpus else int(self.target.get("num-cores") or len(cores))
        if cpus is None and options.pin and threads <= len(cores):
            cpus = cores[:threads]
        self.measurer = Measurer(
            self.target,
            options,
            cpus=cpus if options.pin else None,
            num_threads=threads,
            cuda_compiler=cuda_compiler,
            env=sandbox_env,
        )

    # --- lifecycle ------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run()`` to return soon; idempotent and safe from a signal handler.

        A measurement in flight is abandoned (its sandbox killed) and the rest
        of the batch released.
        """
        self._stop.set()
        self.measurer.interrupt()

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
            self._start_measurer()
            while not self._stop.is_set():
                lease = self._lease()
                if lease is None or lease.lease_id is None or not lease.candidates:
                    self._stop.wait(self.options.poll_s)
                    continue
                self._work(lease)
        except Stopped:
            pass
        except _AUTH as exc:
            self._fatal = exc
        finally:
            self._stop.set()
            self.measurer.close()
            self.api.close()
        if self._fatal is not None:
            if isinstance(self._fatal, _AUTH):
                log.error("the service rejected this worker's token, stopping: %s", self._fatal)
            else:
                log.error("worker stopped: %s", self._fatal)
            raise self._fatal
        log.info("worker %r stopped after %d measurements", self.name, self.measured)

    def _start_measurer(self) -> None:
        """Start the runner and take the first calibration; a machine that cannot run
        a sandbox at all stops the daemon (after a few tries)."""
        while not self._stop.is_set():
            try:
                self.measurer.start()
                cal = self.measurer.calibration
                if cal is not None:
                    log.info("calibration at start: %s", cal.model_dump(exclude_none=True))
                return
            except SandboxStartError as exc:
                if self._stop.is_set():
                    return
                self._start_failures += 1
                log.error("sandbox cannot start (%d in a row): %s", self._start_failures, exc)
                if self._start_failures >= MAX_SANDBOX_START_FAILURES:
                    self._fatal = exc
                    raise Stopped() from exc
                self._stop.wait(min(self.api.backoff_max_s, 2.0**self._start_failures))

    # --- service calls ----------------------------------------------------------------

    def _register(self) -> None:
        # Under emulation (detect_hardware's "emulated", or the CLI's --emulated) the service
        # stores the timings but never ranks them as best for the target.
        self.hardware = self.hardware or detect_hardware()
        body = WorkerRegister(
            name=self.name,
            hardware=self.hardware,
            target=self.target,
            calibration=self.measurer.calibration if self.measurer.calibrator.samples else None,
            emulated=bool(self.hardware.get("emulated")),
        )
        worker = self.api.register(body)
        self._sent_calibration = body.calibration
        if self.worker_id is not None and worker.id != self.worker_id:
            log.warning("the service now knows this worker as %d (was %d)", worker.id, self.worker_id)
        self.worker_id = worker.id
        log.info("registered as worker %d (target key %s)", worker.id, worker.target_key)

    def _lease(self) -> LeaseResponse | None:
        assert self.worker_id is not None
        try:
            return self.api.lease(LeaseRequest(worker_id=self.worker_id, max_candidates=self.options.max_candidates))
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
        except errors.TunehubError as exc:
            log.warning("could not release lease %d (%s); its candidates return when it expires", lease_id, exc)

    # --- one batch ----------------------------------------------------------------------

    def _work(self, lease: LeaseResponse) -> None:
        assert lease.lease_id is not None and self.worker_id is not None
        lease_id, worker_id = lease.lease_id, self.worker_id
        started = time.monotonic()
        interval = self.options.heartbeat_s or max(lease.ttl_s / 3.0, 0.1)
        done, lost = threading.Event(), threading.Event()
        beat = threading.Thread(
            target=self._heartbeat_loop, args=(lease_id, interval, done, lost), name=f"heartbeat-{lease_id}", daemon=True
        )
        beat.start()
        remaining = {c.id for c in lease.candidates}
        errors_seen = 0

        def report(results: list[CandidateResult]) -> bool:
            nonlocal errors_seen
            if lost.is_set():
                return False
            # Results carry their own flags; the calibration travels only when it changed
            # (the service then stores it on the worker's row: one write, not one per report).
            calibration = self.measurer.calibration
            body = ResultsReport(
                worker_id=worker_id,
                results=results,
                calibration=calibration if calibration != self._sent_calibration else None,
            )
            try:
                self.api.report(lease_id, body)
            except _LOST as exc:
                log.warning("lease %d lost while reporting (%s); dropping the rest of the batch", lease_id, exc)
                lost.set()
                return False
            if body.calibration is not None:
                self._sent_calibration = body.calibration
            for r in results:
                remaining.discard(r.candidate_id)
                if r.error:
                    errors_seen += 1
                    log.info("candidate %d: %s", r.candidate_id, r.error.splitlines()[0][:300])
            self.measured += len(results)
            return not (self._stop.is_set() or lost.is_set())

        items = [
            Item(
                candidate_id=c.id,
                workload_hash=c.workload_hash,
                mod_json=lease.workloads.get(c.workload_hash),
                trace=c.trace,
            )
            for c in lease.candidates
        ]
        try:
            self.measurer.measure(items, report)
            self._start_failures = 0
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

    def _heartbeat_loop(self, lease_id: int, interval: float, done: threading.Event, lost: threading.Event) -> None:
        """Keep the lease alive while the batch is measured; a crash here stops the daemon."""
        assert self.worker_id is not None
        try:
            while not done.wait(interval):
                try:
                    self.api.heartbeat(lease_id, HeartbeatRequest(worker_id=self.worker_id))
                except errors.Unavailable as exc:
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
