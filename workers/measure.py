"""The Measurer: measures a batch for one target on one device.

A batch goes through two phases::

    build phase   builder sandboxes (``BuildPool``, one per core by default) apply
                  each trace, build and export it to a shared folder, all at once
    run phase     the one runner sandbox, pinned to the target's cores, loads each
                  artifact, checks it against the reference and times it, while
                  no build is running

The phase barrier makes runs exclusive (no build of ours perturbs a timing) with
no locking. ``build_workers=0`` builds inside the runner (one process, for boards
with little memory). A result is flagged, and still reported with all its
repeats, when the calibration says degraded (``workers.calibration``) or other
processes disturbed its timing after the retries the interference policy allows
(``workers.interference``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common.protocol import Calibration, CandidateResult, ErrorKind
from workers.build_pool import BuildPool
from workers.calibration import Calibrator
from workers import interference
from workers import sandbox_protocol as sp
from workers.interference import InterferencePolicy, ProcStatLoad
from workers.sandbox_client import Sandbox, outcome_from_reply
from workers.options import WorkerOptions, default_build_workers
from workers.timing import Timing

log = logging.getLogger("workers.measure")

__all__ = ["Item", "Measurer", "Report", "Timing"]  # Timing re-exported for callers


@dataclass(frozen=True)
class Item:
    """One candidate to measure."""

    candidate_id: int
    workload_hash: str
    mod_json: str | None
    trace: Any


Report = Callable[[list[CandidateResult]], bool]  # False: stop (the lease is lost)


class Measurer:
    """Measures batches for one target on one device; ``start()`` then ``measure()``.

    Use ``measure`` from one thread (the one that called ``start``: the runner
    sandbox dies with it); ``interrupt()`` from any thread or a signal handler.
    """

    def __init__(
        self,
        target: dict[str, Any],
        options: WorkerOptions | None = None,
        *,
        cpus: list[int] | None = None,
        num_threads: int | None = None,
        cuda_compiler: str | None = None,
        env: dict[str, str] | None = None,
        interference: InterferencePolicy | None = None,
    ):
        self.target = dict(target)
        self.options = options or WorkerOptions()
        self.cpus = list(cpus) if cpus else None
        self.interference = interference or InterferencePolicy(
            tolerance=self.options.interference_tolerance,
            retries=self.options.interference_retries,
            quiet_wait_s=self.options.quiet_wait_s,
            load=ProcStatLoad(self.cpus),
        )
        self.kind = str(self.target["kind"])
        builders = self.options.build_workers
        self.build_workers = max(0, default_build_workers() if builders is None else builders)
        self.timing = self.options.timing or Timing(cache_flush=self.kind == "llvm")
        self.calibrator = Calibrator(self.options.calibration_tolerance)
        self._env = dict(env or {})
        self._cuda_compiler = cuda_compiler
        self.runner = Sandbox(
            target_kind=self.kind,
            num_threads=num_threads,
            cpus=cpus,
            env=self._env,
            cuda_compiler=cuda_compiler,
            name="runner",
        )
        self.pool: BuildPool | None = None
        self._workdir: str | None = None
        self._stop = threading.Event()
        self._last_calibration = float("-inf")
        self.timeline: list[tuple[str, float, float]] = []  # ("build"|"run", start, end), wall clock
        self.others_busy: dict[int, float | None] = {}  # candidate id -> others' share of our CPUs while timed

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the builders and the runner (in parallel), then take the first calibration
        once they are all up, so it sees the machine as quiet as it gets.

        Raises ``SandboxStartError`` when the runner (or every builder) cannot start.
        """
        if self.build_workers and self.pool is None:
            self._workdir = tempfile.mkdtemp(prefix="tunehub-build-")
            self.pool = BuildPool(
                self.build_workers,
                kind=self.kind,
                env=self._env,
                cuda_compiler=self._cuda_compiler,
                timeout_s=self.options.build_timeout_s,
            )
        self.runner.start()
        if self.pool is not None:
            self.pool.wait_ready(self.runner.start_timeout_s)
        if self.options.calibrate_every_s > 0:
            self.calibrate()

    def interrupt(self) -> None:
        """Abandon what is in flight; every later call answers at once. Signal-safe."""
        self._stop.set()
        self.runner.interrupt()
        if self.pool is not None:
            self.pool.interrupt()

    def close(self) -> None:
        self.interrupt()
        if self.pool is not None:
            self.pool.close()
        self.runner.close()
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    @property
    def calibration(self) -> Calibration | None:
        return self.calibrator.snapshot() if self.options.calibrate_every_s > 0 else None

    # --- calibration -----------------------------------------------------------------

    def calibrate(self) -> bool:
        """Time the calibration kernel (retried while disturbed); True when the sample counted.
        A failure leaves the status unknown, never raises."""
        request = sp.CalibrateRequest(target=self.target)
        reply = self.interference.least_disturbed(lambda again: self._call(request, self.options.run_timeout_s), self._stop)
        self._last_calibration = self.interference.clock()
        return self.calibrator.record(reply, disturbed=reply is not None and self.interference.disturbed_reply(reply))

    def _calibrate_if_stale(self) -> None:
        if self.options.calibrate_every_s > 0 and self.interference.clock() - self._last_calibration >= self.options.calibrate_every_s:
            self.calibrate()

    # --- one batch ---------------------------------------------------------------------

    def measure(self, items: Sequence[Item], report: Report) -> None:
        """Measure ``items`` and hand every outcome to ``report`` as soon as it is known.

        Returns when all are reported, when ``report`` answers False, or when
        interrupted (the unreported rest is the caller's to release). Raises
        ``SandboxStartError`` when a sandbox cannot start at all.
        """
        if self._stop.is_set():
            return
        if self.pool is None:
            self._measure_in_runner(items, report)
            return
        assert self._workdir is not None
        requests = [
            sp.BuildRequest(**self._workload_fields(item), trace=item.trace, out=os.path.join(self._workdir, f"c{item.candidate_id}"))
            for item in items
        ]
        replies = self.pool.build_all(requests, self._stop)
        if self._stop.is_set():
            return
        for reply in replies:
            self._span("build", reply)
        failed = [self._result(item, reply) for item, reply in zip(items, replies) if not isinstance(reply, sp.Built)]
        if failed and not report(failed):
            return
        self._calibrate_if_stale()
        for item, built in zip(items, replies):
            if not isinstance(built, sp.Built):
                continue
            if self._stop.is_set():
                return
            result = self._run(item, built)
            if result is None:
                return  # interrupted
            if not report([result]):
                return

    def _run(self, item: Item, built: sp.Built) -> CandidateResult | None:
        try:
            if not built.runnable:
                note = built.note or "cross-compiled"
                return CandidateResult(
                    candidate_id=item.candidate_id, error=f"build: cannot run here: {note}", error_kind=ErrorKind.unsupported
                )
            req = sp.RunRequest(
                **self._workload_fields(item),
                **self.timing.fields(),
                artifact=built.artifact,
                check_artifact=built.check_artifact,
                timed_args=built.timed_args,
                device_binaries=built.device_binaries,
            )
            timeout = self.options.run_timeout_s * (1 if self.runner.knows(item.workload_hash) else 2)
            retry = req.model_copy(update={"check": False})  # checked once is enough
            reply = self.interference.least_disturbed(
                lambda again: self._call(retry if again else req, timeout), self._stop
            )
            if reply is None:
                return None
            self._span("run", reply)
            return self._result(item, reply)
        finally:
            self._remove(built)

    def _call(self, request: sp.Request, timeout: float) -> interference.Reply | None:
        """The runner's reply to a timing request, None when the sandbox was closed under it."""
        reply = self.runner.call(request, timeout)
        if reply is None or isinstance(reply, (sp.Timed, sp.Calibrated, sp.Failed)):
            return reply
        return sp.failed(ErrorKind.crash, f"sandbox protocol error: {reply!r} to {request.op}")

    def _measure_in_runner(self, items: Sequence[Item], report: Report) -> None:
        self._calibrate_if_stale()
        for item in items:
            if self._stop.is_set():
                return
            req = sp.MeasureRequest(**self._workload_fields(item), **self.timing.fields(), trace=item.trace)
            timeout = self.options.build_timeout_s + self.options.run_timeout_s
            if not self.runner.knows(item.workload_hash):
                timeout += self.options.run_timeout_s  # the untuned reference is built and run first
            reply = self.runner.call(req, timeout)
            if reply is None:
                return
            if not report([self._result(item, reply)]):
                return

    def _workload_fields(self, item: Item) -> dict[str, Any]:
        return {"workload_hash": item.workload_hash, "mod_json": item.mod_json, "target": self.target, "check": self.options.check}

    def _span(self, kind: str, reply: sp.Reply | None) -> None:
        start, end = getattr(reply, "t_start", None), getattr(reply, "t_end", None)
        if start is not None and end is not None:
            self.timeline.append((kind, start, end))

    def _result(self, item: Item, reply: sp.Reply) -> CandidateResult:
        """The candidate's outcome; flagged when the calibration is degraded or its timing disturbed, and
        marked unchecked when this worker runs without output checks (the service does not count such times)."""
        outcome = outcome_from_reply(reply)
        if isinstance(reply, sp.Timed):
            self.others_busy[item.candidate_id] = reply.others_busy
            flagged = self.calibrator.degraded or self.interference.disturbed_reply(reply)
            outcome = outcome.model_copy(update={"flagged": flagged, "output_checked": self.options.check})
        return CandidateResult(candidate_id=item.candidate_id, **outcome.model_dump())

    @staticmethod
    def _remove(built: sp.Built) -> None:
        paths = [built.artifact, built.check_artifact, *(b.path for b in built.device_binaries)]
        for path in paths:
            if path:
                try:
                    os.unlink(path)
                except OSError:
                    pass
