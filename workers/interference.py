"""The interference policy: when a timing was disturbed by other processes, and what then.

A run (or a calibration) is *disturbed* when other processes used more than
``tolerance`` of the runner's CPUs while it timed. A disturbed attempt is
retried up to ``retries`` times, each after waiting (at most ``quiet_wait_s``)
for the CPUs to go quiet; the least disturbed attempt is kept. A tuner sharing
the machine would otherwise make good schedules look several times slower.

Load that outlasts a whole quiet wait is taken as the machine's state, not a
moment: for ``busy_hold_s`` after such a wait, disturbed attempts are kept as
they are (no more waits, no retries), so a worker on a laptop that is always
busy measures at full speed with its results marked disturbed, instead of
spending ``retries × quiet_wait_s`` on every candidate. The first quiet window
seen, or the hold running out, restores the waits.

The CPU-load source and the clock are injected so the policy can be tested with
a scripted load; the defaults read /proc/stat (``CpuLoad``) and ``time.monotonic``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, Union

from workers import sandbox_protocol as sp
from workers.timing import CpuLoad

Clock = Callable[[], float]


class LoadSource(Protocol):
    """Share of our CPUs that other processes used over a window of about ``window_s``
    (None where unknown); returns early, with what it saw, once ``stop`` is set."""

    def __call__(self, window_s: float, stop: threading.Event) -> float | None: ...


class ProcStatLoad:
    """The real load source: ``CpuLoad`` over the runner's CPUs (all of ours when None)."""

    def __init__(self, cpus: list[int] | None = None) -> None:
        self.cpus = list(cpus) if cpus else None

    def __call__(self, window_s: float, stop: threading.Event) -> float | None:
        with CpuLoad(self.cpus) as load:
            stop.wait(window_s)
        return load.others


Reply = Union[sp.Timed, sp.Calibrated, sp.Failed]  # what a runner answers a timing request with
Attempt = Callable[[bool], "Reply | None"]
"""One timing attempt's reply, None when interrupted; the argument is True for a retry
(the caller may send a cheaper request then)."""


class InterferencePolicy:
    """Decides whether an attempt was disturbed, waits for quiet and retries."""

    def __init__(
        self,
        *,
        tolerance: float = 0.2,
        retries: int = 2,
        quiet_wait_s: float = 10.0,
        load: LoadSource | None = None,
        clock: Clock = time.monotonic,
        poll_s: float = 0.2,
        busy_hold_s: float = 120.0,
    ) -> None:
        self.tolerance = tolerance
        self.retries = max(0, int(retries))
        self.quiet_wait_s = quiet_wait_s
        self.load: LoadSource = load or ProcStatLoad()
        self.clock = clock
        self.poll_s = poll_s
        self.busy_hold_s = busy_hold_s
        self._busy_until: float | None = None  # clock time until which waiting is skipped

    @property
    def persistently_busy(self) -> bool:
        """Whether the last quiet wait timed out less than ``busy_hold_s`` ago (and none has succeeded since)."""
        return self._busy_until is not None and self.clock() < self._busy_until

    def disturbed(self, others_busy: float | None) -> bool:
        return others_busy is not None and others_busy > self.tolerance

    def wait_quiet(self, stop: threading.Event) -> bool:
        """True once other processes use at most ``tolerance`` of our CPUs; False after
        ``quiet_wait_s`` or on stop."""
        deadline = self.clock() + self.quiet_wait_s
        while not stop.is_set():
            others = self.load(self.poll_s, stop)
            if others is None or others <= self.tolerance:
                self._busy_until = None
                return True
            if self.clock() >= deadline:
                self._busy_until = self.clock() + self.busy_hold_s
                return False
        return False

    def disturbed_reply(self, reply: Reply) -> bool:
        return not isinstance(reply, sp.Failed) and self.disturbed(reply.others_busy)

    def least_disturbed(self, attempt: Attempt, stop: threading.Event) -> Reply | None:
        """Run ``attempt(False)``; while the kept result is disturbed, wait for quiet and run
        ``attempt(True)``, up to ``retries`` times. Returns the least disturbed successful
        attempt (a failed first attempt as it is), or None once an attempt is interrupted.
        While :attr:`persistently_busy`, the first attempt is kept as it is."""
        kept = attempt(False)
        for _ in range(self.retries):
            if kept is None or not self.disturbed_reply(kept) or self.persistently_busy:
                break
            self.wait_quiet(stop)
            again = attempt(True)
            if again is None:
                return None
            if not isinstance(again, sp.Failed) and _busy(again) < _busy(kept):
                kept = again
        return kept


def _busy(reply: Reply) -> float:
    return 0.0 if isinstance(reply, sp.Failed) else reply.others_busy or 0.0
