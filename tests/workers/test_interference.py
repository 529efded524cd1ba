"""The interference policy and calibration counting, driven by a scripted CPU-load source and clock."""

from __future__ import annotations

import threading

from worker_helpers import FakeClock as Clock
from worker_helpers import ScriptedLoad

from common.protocol import ErrorKind
from workers import sandbox_protocol as sp
from workers.calibration import Calibrator
from workers.interference import InterferencePolicy


class ScriptedRunner:
    """Attempt replies in turn; records whether each was a retry."""

    def __init__(self, replies: list[sp.Reply | None]) -> None:
        self.replies, self.agains = list(replies), []

    def __call__(self, again: bool) -> sp.Reply | None:
        self.agains.append(again)
        return self.replies[min(len(self.agains) - 1, len(self.replies) - 1)]


def _policy(load: list[float | None], *, retries: int = 2, quiet_wait_s: float = 1.0) -> tuple[InterferencePolicy, ScriptedLoad]:
    clock = Clock()
    source = ScriptedLoad(clock, load)
    policy = InterferencePolicy(tolerance=0.2, retries=retries, quiet_wait_s=quiet_wait_s, load=source, clock=clock, poll_s=0.2)
    return policy, source


def _timed(others: float | None, secs: float = 1e-3) -> sp.Timed:
    return sp.Timed(run_secs=[secs], others_busy=others)


def _calibrated(others: float | None, secs: float) -> sp.Calibrated:
    return sp.Calibrated(secs=secs, results=[secs], others_busy=others)


def test_a_quiet_attempt_is_kept_at_once() -> None:
    policy, load = _policy([0.9])
    runner = ScriptedRunner([_timed(0.05)])
    assert policy.least_disturbed(runner, threading.Event()) == _timed(0.05)
    assert runner.agains == [False] and load.calls == 0  # no waiting on a quiet machine


def test_busy_then_quiet_waits_for_quiet_and_keeps_the_clean_retry() -> None:
    policy, load = _policy([0.9, 0.7, 0.1])
    runner = ScriptedRunner([_timed(0.8), _timed(0.05)])
    kept = policy.least_disturbed(runner, threading.Event())
    assert kept == _timed(0.05) and not policy.disturbed_reply(kept)
    assert runner.agains == [False, True]  # a retry: the caller may skip the output check
    assert load.calls == 3  # waited until the load source said quiet


def test_always_busy_gives_up_after_the_retries_and_keeps_the_least_disturbed() -> None:
    policy, load = _policy([0.9, 0.9, 0.9, 0.9, 0.9, 0.1], retries=3, quiet_wait_s=1.0)
    policy.busy_hold_s = 0.0  # every wait is a fresh look
    runner = ScriptedRunner([_timed(0.6), _timed(0.5), _timed(0.9), _timed(0.7)])
    kept = policy.least_disturbed(runner, threading.Event())
    assert kept == _timed(0.5) and policy.disturbed_reply(kept)
    assert len(runner.agains) == 4
    assert load.calls == 5 + 1 + 1  # the first wait ends at its deadline (1 s of 0.2 s windows), then quiet at once


def test_persistent_load_stops_the_waiting_until_the_hold_runs_out() -> None:
    """On a machine that stays busy, one timed-out wait is enough: the next candidates are kept at once."""
    policy, load = _policy([0.9], retries=2, quiet_wait_s=1.0)
    policy.busy_hold_s = 60.0
    first = ScriptedRunner([_timed(0.6), _timed(0.5), _timed(0.9)])
    assert policy.least_disturbed(first, threading.Event()) == _timed(0.5)
    assert first.agains == [False, True] and load.calls == 5  # one wait to its deadline, one retry, then the hold
    assert policy.persistently_busy
    for _ in range(10):  # the rest of a batch: no waits, no retries, results kept (and marked) as they are
        runner = ScriptedRunner([_timed(0.8), _timed(0.1)])
        kept = policy.least_disturbed(runner, threading.Event())
        assert kept == _timed(0.8) and policy.disturbed_reply(kept) and runner.agains == [False]
    assert load.calls == 5
    load.clock.now += 61.0  # the hold runs out: waiting for quiet is worth a try again
    assert not policy.persistently_busy
    again = ScriptedRunner([_timed(0.8), _timed(0.7)])
    policy.least_disturbed(again, threading.Event())
    assert again.agains == [False, True] and load.calls == 10


def test_a_quiet_window_ends_the_hold() -> None:
    policy, load = _policy([0.9, 0.9, 0.9, 0.9, 0.9, 0.0], retries=1, quiet_wait_s=1.0)
    assert policy.wait_quiet(threading.Event()) is False and policy.persistently_busy
    assert policy.wait_quiet(threading.Event()) is True and not policy.persistently_busy
    runner = ScriptedRunner([_timed(0.8), _timed(0.05)])
    assert policy.least_disturbed(runner, threading.Event()) == _timed(0.05)  # retries are back


def test_failures_and_interruptions_are_not_retried() -> None:
    policy, _ = _policy([0.9])
    failed = ScriptedRunner([sp.failed(ErrorKind.build, "build: boom")])
    assert policy.least_disturbed(failed, threading.Event()) == sp.failed(ErrorKind.build, "build: boom") and failed.agains == [False]
    interrupted = ScriptedRunner([_timed(0.9), None])
    assert policy.least_disturbed(interrupted, threading.Event()) is None
    retry_failed = ScriptedRunner([_timed(0.9), sp.failed(ErrorKind.run, "run: boom"), _timed(0.95)])
    assert policy.least_disturbed(retry_failed, threading.Event()) == _timed(0.9)  # a failed retry is never kept


def test_quiet_wait_ends_on_stop_and_on_an_unknown_load() -> None:
    policy, _ = _policy([0.9], quiet_wait_s=3600)
    stop = threading.Event()
    stop.set()
    assert policy.wait_quiet(stop) is False
    unknown, _ = _policy([None])
    assert unknown.wait_quiet(threading.Event()) is True  # /proc/stat unreadable: nothing to wait for


def test_calibration_counts_only_undisturbed_samples() -> None:
    cal = Calibrator(tolerance=1.3)
    quiet, _ = _policy([0.0])
    reply = quiet.least_disturbed(ScriptedRunner([_calibrated(0.0, 1e-3)]), threading.Event())
    assert cal.record(reply, disturbed=quiet.disturbed_reply(reply)) and cal.samples == [1e-3]

    busy_then_quiet, _ = _policy([0.9, 0.0])
    reply = busy_then_quiet.least_disturbed(ScriptedRunner([_calibrated(0.9, 3e-3), _calibrated(0.0, 1.1e-3)]), threading.Event())
    assert cal.record(reply, disturbed=busy_then_quiet.disturbed_reply(reply))
    assert cal.samples == [1e-3, 1.1e-3] and cal.snapshot().status == "ok"

    always_busy, _ = _policy([0.9])
    reply = always_busy.least_disturbed(ScriptedRunner([_calibrated(0.9, 5e-3)]), threading.Event())
    assert not cal.record(reply, disturbed=always_busy.disturbed_reply(reply))
    assert cal.samples == [1e-3, 1.1e-3] and cal.snapshot().status == "ok"  # a busy moment flags nothing

    assert not cal.record(None, disturbed=False)  # interrupted
    assert not cal.record(sp.failed(ErrorKind.run, "calibrate: run: boom"), disturbed=False)
    assert cal.snapshot().detail == "calibrate: run: boom" and len(cal.samples) == 2
