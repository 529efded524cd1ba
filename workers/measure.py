"""Measuring a batch: builds in parallel across cores, then runs one at a time.

A batch goes through two phases::

    build phase   builder sandboxes (one per core by default) apply each trace,
                  build and export it to a shared folder, all at once
    run phase     the one runner sandbox, pinned to the target's cores, loads each
                  artifact, checks it against the reference and times it, while
                  no build is running

Why two phases rather than building ahead while the previous candidate runs:
on a CPU worker a build on any core perturbs a run that uses every core (and
shares the memory system), so "runs are exclusive" has to mean "nothing else
of ours runs during a run"; the phase barrier gives that with no locking, and
costs at most the slowest build of a batch. Each phase's failures stay its
own: a builder that crashes or hangs costs that builder process, a kernel
that crashes or hangs costs the runner process, and either way the
candidate gets an error naming the cause.

``build_workers=0`` builds inside the runner instead (one process: for boards
with little memory).

Two signals flag a result as untrustworthy (it is still reported, with all
its repeats; the service ranks flagged results after unflagged ones):

* the calibration kernel, a fixed small matmul the runner times at start and
  before a run phase when the last calibration is older than
  ``calibrate_every_s``: ``degraded`` when it runs ``calibration_tolerance``×
  slower than its best (throttled, or overloaded for a while; ``Calibrator``).
  A calibration that other processes disturbed is retried like a run and,
  still disturbed, not counted: it would flag a whole batch for a moment's load;
* interference during the run itself: other processes used more than
  ``interference_tolerance`` of the runner's CPUs while it timed (the
  sandbox's ``CpuLoad``, from /proc/stat), which catches a burst that a
  periodic calibration would miss.

A disturbed run is not simply reported: the runner waits (up to
``quiet_wait_s``) until other processes leave its CPUs alone and times the
candidate again, up to ``interference_retries`` times, and reports the least
disturbed attempt (flagged only if every attempt was). Why: on a machine
that also runs the tuner (the demo, a developer's box, a small lab), the
search generating the next batch made 2–3× slower timings of otherwise
good schedules (seen on a 2-core box: 69 of 96 results flagged, a schedule
measured at 2.4 ms that re-times at 1.0 ms alone), and a cost model and a
"best" learned from such numbers are wrong. On a dedicated worker nothing
waits.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.protocol import Calibration
from workers.sandbox_client import Sandbox, SandboxStartError
from workers.interference import InterferencePolicy, ProcStatLoad

log = logging.getLogger("workers.measure")


@dataclass(frozen=True)
class Timing:
    """How one candidate is timed (all repeats are reported).

    ``number``/``repeat``/``min_repeat_ms`` are TVM's ``time_evaluator``
    settings; ``warmup`` untimed calls come first; ``cache_flush`` flushes CPU
    caches before each repeat (CPU targets only; with it ``number`` should stay
    1 and ``min_repeat_ms`` small, or the flush is amortised away).
    """

    number: int = 1
    repeat: int = 5
    min_repeat_ms: int = 20
    warmup: int = 1
    cache_flush: bool = True

    def fields(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "repeat": self.repeat,
            "min_repeat_ms": self.min_repeat_ms,
            "warmup": self.warmup,
            "cache_flush": self.cache_flush,
        }


@dataclass(frozen=True)
class Item:
    """One candidate to measure."""

    candidate_id: int
    workload_hash: str
    mod_json: str | None
    trace: Any


@dataclass(frozen=True)
class ItemResult:
    """One candidate's outcome: ``run_secs`` (every repeat) or ``error``."""

    candidate_id: int
    run_secs: list[float] | None = None
    error: str | None = None
    flagged: bool = False
    others_busy: float | None = None  # share of our CPUs other processes used while timing


class Calibrator:
    """Judges the worker's state from the calibration kernel's times.

    The baseline is the fastest of the last ``window`` calibrations: the machine
    can always be slower than its best, never faster, so the minimum is its
    unloaded speed, and a baseline taken while busy corrects itself as soon
    as a quieter calibration comes (the window lets a machine that is now
    permanently slower, e.g. moved to a power-saving profile, settle on its
    new speed). ``degraded`` when the latest time exceeds ``tolerance`` × baseline.
    """

    def __init__(self, tolerance: float = 1.3, window: int = 50):
        if tolerance <= 1.0:
            raise ValueError(f"calibration tolerance must exceed 1.0, got {tolerance}")
        self.tolerance = tolerance
        self.window = window
        self.samples: list[float] = []
        self.detail: str | None = None

    def add(self, secs: float) -> None:
        self.samples = (self.samples + [float(secs)])[-self.window :]
        self.detail = None

    def failed(self, reason: str) -> None:
        self.detail = reason

    def record(self, reply: dict[str, Any] | None, *, disturbed: bool) -> bool:
        """Count one ``calibrate`` reply; False when it is not counted.

        Not counted: an interrupted one (None), a failed one (its error becomes the
        detail) and a disturbed one: other processes on our CPUs say nothing about this
        machine's own speed, and such a sample would flag every result until the next.
        """
        if reply is None:
            return False
        if reply.get("error"):
            log.warning("calibration failed: %s", reply["error"])
            self.failed(str(reply["error"])[:500])
            return False
        if disturbed:
            log.info("calibration disturbed (other processes used %.0f %% of our CPUs): not counted",
                     100 * float(reply.get("others_busy") or 0))
            return False
        self.add(float(reply["secs"]))
        snap = self.snapshot()
        log.log(
            logging.WARNING if snap.status == "degraded" else logging.INFO,
            "calibration %.4g ms (baseline %.4g ms, ratio %.2f): %s",
            float(reply["secs"]) * 1e3,
            (snap.baseline_s or 0) * 1e3,
            snap.ratio or 1.0,
            snap.status,
        )
        return True

    @property
    def ratio(self) -> float | None:
        if not self.samples:
            return None
        return self.samples[-1] / min(self.samples)

    @property
    def degraded(self) -> bool:
        ratio = self.ratio
        return ratio is not None and ratio > self.tolerance

    def snapshot(self) -> Calibration:
        if not self.samples:
            return Calibration(status="unknown", tolerance=self.tolerance, detail=self.detail or "not calibrated yet")
        return Calibration(
            status="degraded" if self.degraded else "ok",
            ratio=round(self.ratio or 1.0, 4),
            baseline_s=min(self.samples),
            latest_s=self.samples[-1],
            tolerance=self.tolerance,
            samples=len(self.samples),
            detail=self.detail,
        )


Report = Callable[[list[ItemResult]], bool]  # False: stop (the lease is lost)


@dataclass
class _Batch:
    """Replies of one build phase, filled in by the builder threads."""

    size: int
    replies: dict[int, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Condition = field(default_factory=threading.Condition)

    def put(self, index: int, reply: dict[str, Any]) -> None:
        with self.lock:
            self.replies[index] = reply
            self.lock.notify_all()

    def wait(self, stop: threading.Event) -> None:
        with self.lock:
            while len(self.replies) < self.size and not stop.is_set():
                self.lock.wait(0.2)


class BuildPool:
    """``size`` builder sandboxes, each owned by its own long-lived thread.

    A sandbox dies with the thread that started it (PR_SET_PDEATHSIG), so each
    builder thread starts and keeps its own; the threads live as long as the pool.
    """

    def __init__(self, size: int, *, kind: str, env: dict[str, str] | None, cuda_compiler: str | None, timeout_s: float):
        self.timeout_s = timeout_s
        self._jobs: queue.Queue[tuple[int, dict[str, Any], _Batch] | None] = queue.Queue()
        self.sandboxes = [
            Sandbox(target_kind=kind, num_threads=1, env=env, cuda_compiler=cuda_compiler, name=f"builder-{i}")
            for i in range(size)
        ]
        self._ready = [threading.Event() for _ in self.sandboxes]
        self.start_errors: list[str] = []
        self._threads = [
            threading.Thread(target=self._serve, args=(sb, ready), name=f"builder-{i}", daemon=True)
            for i, (sb, ready) in enumerate(zip(self.sandboxes, self._ready))
        ]
        for t in self._threads:
            t.start()

    def wait_ready(self, timeout_s: float) -> None:
        """Block until every builder process has started (or failed to); raises ``SandboxStartError``
        when none could start."""
        deadline = time.monotonic() + timeout_s
        for ready in self._ready:
            ready.wait(max(0.0, deadline - time.monotonic()))
        if self.start_errors and len(self.start_errors) == len(self.sandboxes):
            raise SandboxStartError(self.start_errors[0])

    def build_all(self, requests: Sequence[dict[str, Any]], stop: threading.Event) -> list[dict[str, Any]]:
        """One reply per request (in order); interrupted ones answer ``interrupted``."""
        batch = _Batch(size=len(requests))
        for i, req in enumerate(requests):
            self._jobs.put((i, req, batch))
        batch.wait(stop)
        closed = {"error": "sandbox closed", "interrupted": True}
        return [batch.replies.get(i, closed) for i in range(len(requests))]

    def _serve(self, sandbox: Sandbox, ready: threading.Event) -> None:
        try:
            sandbox.start()  # now, in this thread: the process lives as long as the thread
        except SandboxStartError as exc:
            self.start_errors.append(str(exc))
        finally:
            ready.set()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            index, request, batch = job
            try:
                reply = sandbox.call(request, self.timeout_s)
            except SandboxStartError as exc:
                reply = {"error": f"builder could not start: {exc}", "start_failed": True}
            except Exception as exc:  # noqa: BLE001 - a builder thread must answer, never die
                log.exception("builder thread failed")
                reply = {"error": f"builder: {type(exc).__name__}: {exc}", "start_failed": True}
            batch.put(index, reply)

    def interrupt(self) -> None:
        for sb in self.sandboxes:
            sb.interrupt()

    def close(self) -> None:
        self.interrupt()
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=10)
        for sb in self.sandboxes:
            sb.close()


class Measurer:
    """Measures batches for one target on one device; ``start()`` then ``measure()``.

    Use ``measure`` from one thread (the one that called ``start``: the runner
    sandbox dies with it); ``interrupt()`` from any thread or a signal handler.
    """

    def __init__(
        self,
        target: dict[str, Any],
        *,
        build_workers: int = 2,
        build_timeout_s: float = 30.0,
        run_timeout_s: float = 60.0,
        timing: Timing | None = None,
        check: bool = True,
        cpus: list[int] | None = None,
        num_threads: int | None = None,
        cuda_compiler: str | None = None,
        env: dict[str, str] | None = None,
        calibrate_every_s: float = 30.0,
        calibration_tolerance: float = 1.3,
        interference_tolerance: float = 0.2,
        interference_retries: int = 2,
        quiet_wait_s: float = 10.0,
        interference: InterferencePolicy | None = None,
    ):
        self.target = dict(target)
        self.cpus = list(cpus) if cpus else None
        self.interference = interference or InterferencePolicy(
            tolerance=interference_tolerance,
            retries=interference_retries,
            quiet_wait_s=quiet_wait_s,
            load=ProcStatLoad(self.cpus),
        )
        self.kind = str(self.target["kind"])
        self.build_workers = max(0, int(build_workers))
        self.build_timeout_s = build_timeout_s
        self.run_timeout_s = run_timeout_s
        self.timing = timing or Timing()
        self.check = check
        self.calibrate_every_s = calibrate_every_s
        self.calibrator = Calibrator(calibration_tolerance)
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
                timeout_s=self.build_timeout_s,
            )
        self.runner.start()
        if self.pool is not None:
            self.pool.wait_ready(self.runner.start_timeout_s)
        if self.calibrate_every_s > 0:
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
        return self.calibrator.snapshot() if self.calibrate_every_s > 0 else None

    # --- calibration -----------------------------------------------------------------

    def calibrate(self) -> bool:
        """Time the calibration kernel (retried while disturbed); True when the sample counted.
        A failure leaves the status unknown, never raises."""
        request = {"op": "calibrate", "target": self.target}
        reply = self.interference.least_disturbed(lambda again: self._call(request, self.run_timeout_s), self._stop)
        self._last_calibration = self.interference.clock()
        return self.calibrator.record(reply, disturbed=reply is not None and self.interference.disturbed_reply(reply))

    def _calibrate_if_stale(self) -> None:
        if self.calibrate_every_s > 0 and self.interference.clock() - self._last_calibration >= self.calibrate_every_s:
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
        requests = []
        assert self._workdir is not None
        for item in items:
            req = self._request(item)
            req.update(op="build", out=os.path.join(self._workdir, f"c{item.candidate_id}"))
            requests.append(req)
        replies = self.pool.build_all(requests, self._stop)
        if any(r.get("start_failed") for r in replies):
            raise SandboxStartError(next(str(r["error"]) for r in replies if r.get("start_failed")))
        if self._stop.is_set():
            return
        failed = [
            ItemResult(candidate_id=item.candidate_id, error=str(reply["error"]))
            for item, reply in zip(items, replies)
            if reply.get("error")
        ]
        for reply in replies:
            if "t_start" in reply:
                self.timeline.append(("build", float(reply["t_start"]), float(reply["t_end"])))
        if failed and not report(failed):
            return
        self._calibrate_if_stale()
        for item, built in zip(items, replies):
            if built.get("error"):
                continue
            if self._stop.is_set():
                return
            result = self._run(item, built)
            if result is None:
                return  # interrupted
            if not report([result]):
                return

    def _run(self, item: Item, built: dict[str, Any]) -> ItemResult | None:
        try:
            if not built.get("runnable", True):
                return ItemResult(item.candidate_id, error=f"build: cannot run here: {built.get('note') or 'cross-compiled'}")
            req = self._request(item)
            req.pop("trace", None)
            req.update(
                op="run",
                artifact=built["artifact"],
                check_artifact=built.get("check_artifact"),
                timed_args=built["timed_args"],
                device_binaries=built.get("device_binaries") or [],
            )
            timeout = self.run_timeout_s * (1 if self.runner.knows(item.workload_hash) else 2)
            retry = {**req, "check": False}  # checked once is enough
            reply = self.interference.least_disturbed(
                lambda again: self._call(retry if again else req, timeout), self._stop
            )
            if reply is None:
                return None
            if "t_start" in reply:
                self.timeline.append(("run", float(reply["t_start"]), float(reply["t_end"])))
            return self._result(item, reply)
        finally:
            self._remove(built)

    def _call(self, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """The runner's reply, None when the sandbox was closed under it."""
        reply = self.runner.call(request, timeout)
        return None if reply.get("interrupted") else reply

    def _measure_in_runner(self, items: Sequence[Item], report: Report) -> None:
        self._calibrate_if_stale()
        for item in items:
            if self._stop.is_set():
                return
            req = self._request(item)
            timeout = self.build_timeout_s + self.run_timeout_s
            if not self.runner.knows(item.workload_hash):
                timeout += self.run_timeout_s  # the untuned reference is built and run first
            reply = self.runner.call(req, timeout)
            if reply.get("interrupted"):
                return
            if not report([self._result(item, reply)]):
                return

    def _request(self, item: Item) -> dict[str, Any]:
        req: dict[str, Any] = {
            "workload_hash": item.workload_hash,
            "mod_json": item.mod_json,
            "trace": item.trace,
            "target": self.target,
            "check": self.check,
        }
        req.update(self.timing.fields())
        return req

    def _result(self, item: Item, reply: dict[str, Any]) -> ItemResult:
        if reply.get("error"):
            return ItemResult(item.candidate_id, error=str(reply["error"]))
        run_secs = reply.get("run_secs")
        if not isinstance(run_secs, list) or not run_secs:
            return ItemResult(item.candidate_id, error=f"sandbox protocol error: no run_secs in {reply!r}"[:500])
        others = reply.get("others_busy")
        disturbed = self.interference.disturbed_reply(reply)
        return ItemResult(
            item.candidate_id,
            run_secs=[float(s) for s in run_secs],
            flagged=self.calibrator.degraded or disturbed,
            others_busy=None if others is None else float(others),
        )

    @staticmethod
    def _remove(built: dict[str, Any]) -> None:
        paths = [built.get("artifact"), built.get("check_artifact")]
        paths += [b.get("path") for b in built.get("device_binaries") or []]
        for path in paths:
            if path:
                try:
                    os.unlink(path)
                except OSError:
                    pass
