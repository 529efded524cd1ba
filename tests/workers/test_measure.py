"""The batch measurer: parallel builds, exclusive runs, flags from calibration and interference."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from worker_helpers import FakeClock, ScriptedLoad, transposed_b_trace

from workers.detect import available_cores
from workers.interference import InterferencePolicy, ProcStatLoad
from workers.calibration import Calibrator
from common.protocol import CandidateResult, ErrorKind
from workers.measure import Item, Measurer
from workers.options import WorkerOptions
from workers.timing import Timing

FAST = Timing(number=1, repeat=2, min_repeat_ms=0, warmup=1, cache_flush=True)
QUIET_WAIT_S = 0.5  # a disturbed timing is retried soon on a busy machine; the waits are tested below


def _items(workload: dict[str, Any], traces: list[Any]) -> list[Item]:
    return [Item(100 + i, workload["hash"], workload["mod_json"], t) for i, t in enumerate(traces)]


def _collect(measurer: Measurer, items: list[Item]) -> list[CandidateResult]:
    got: list[CandidateResult] = []
    measurer.measure(items, lambda rs: got.extend(rs) or True)
    return got


def test_builds_run_in_parallel_and_runs_alone(workload: dict[str, Any]) -> None:
    traces = list(workload["traces"]) + [transposed_b_trace(workload["mod"]), '[[["Nope",[],[],[]]],[]]']
    m = Measurer(workload["target"], WorkerOptions(build_workers=2, timing=FAST, calibrate_every_s=3600,
                                                         quiet_wait_s=QUIET_WAIT_S))
    try:
        m.start()
        got = _collect(m, _items(workload, traces))
    finally:
        m.close()
    by_id = {r.candidate_id: r for r in got}
    assert sorted(by_id) == [100, 101, 102, 103, 104]  # every candidate answered once
    assert got[0].candidate_id == 104 and got[0].error.startswith("apply trace:")  # build errors come first
    assert got[0].error_kind is ErrorKind.build
    assert by_id[103].error.startswith("wrong output:") and by_id[103].error_kind is ErrorKind.wrong_output
    assert all(by_id[i].run_secs and len(by_id[i].run_secs) == 2 for i in (100, 101, 102))
    builds = [(s, e) for kind, s, e in m.timeline if kind == "build"]
    runs = [(s, e) for kind, s, e in m.timeline if kind == "run"]
    assert len(builds) == 5 and len(runs) == 4  # the trace that did not apply built nothing to run
    # Exclusive runs: no build of ours overlaps any run.
    assert all(e <= rs or s >= re for s, e in builds for rs, re in runs)
    # Parallel builds: two builder processes had builds in flight at the same moment.
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(builds) for b in builds[i + 1 :])
    _assert_flags_consistent(m, got)


def test_a_worker_without_output_checks_marks_its_times_unchecked(workload: dict[str, Any]) -> None:
    """The service never counts an unchecked time (db.plausibility): the worker must say when it skipped the check."""
    m = Measurer(workload["target"], WorkerOptions(build_workers=1, timing=FAST, calibrate_every_s=3600, check=False,
                                                         quiet_wait_s=QUIET_WAIT_S))
    try:
        m.start()
        got = _collect(m, _items(workload, list(workload["traces"])[:1]))
    finally:
        m.close()
    assert len(got) == 1 and got[0].run_secs and got[0].output_checked is False


def _assert_flags_consistent(m: Measurer, results: list[CandidateResult]) -> None:
    """What holds however busy the machine is: the start calibration counted (ok: one sample is
    its own baseline) or was too disturbed to count (unknown), and each result is flagged exactly
    when the calibration is degraded or other processes disturbed its timing."""
    cal = m.calibration
    assert cal is not None and cal.samples <= 1
    assert (cal.status, cal.samples) in (("ok", 1), ("unknown", 0)), cal
    for r in results:
        if r.run_secs:
            assert r.flagged == (cal.status == "degraded" or m.interference.disturbed(m.others_busy[r.candidate_id])), r


def test_single_process_mode_and_timeouts(workload: dict[str, Any]) -> None:
    """build_workers=0 builds in the runner; a build that outlives its timeout costs the process."""
    m = Measurer(workload["target"], WorkerOptions(build_workers=0, timing=FAST, calibrate_every_s=0, build_timeout_s=60))
    try:
        m.start()
        assert m.calibration is None  # calibration off
        got = _collect(m, _items(workload, [workload["traces"][0]]))
        assert got[0].run_secs, got[0].error
        m.options = m.options.replace(build_timeout_s=0.001, run_timeout_s=0.001)
        slow = _collect(m, [Item(7, "fresh-hash", workload["mod_json"], workload["traces"][1])])
        assert slow[0].error is not None and slow[0].error.startswith("timeout: no result after"), slow[0].error
        assert slow[0].error_kind is ErrorKind.timeout
    finally:
        m.close()


def _burn(cpu: int, seconds: float, spinning: Any) -> None:
    os.sched_setaffinity(0, {cpu})
    spinning.set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@contextmanager
def _hog(cpu: int, seconds: float) -> Iterator[None]:
    """Another process spinning on ``cpu`` for ``seconds`` (killed on exit)."""
    ctx = multiprocessing.get_context("spawn")
    spinning = ctx.Event()
    hog = ctx.Process(target=_burn, args=(cpu, seconds, spinning), daemon=True)
    hog.start()
    try:
        assert spinning.wait(60), "the hog did not start"
        yield
    finally:
        hog.kill()
        hog.join()


def _slow_runner(workload: dict[str, Any], cpu: int, policy: InterferencePolicy) -> Measurer:
    """A measurer pinned to ``cpu`` whose timings last long enough (4 × 150 ms) for a hog to show."""
    slow = Timing(number=1, repeat=4, min_repeat_ms=150, warmup=0, cache_flush=False)
    return Measurer(workload["target"], WorkerOptions(build_workers=1, timing=slow, calibrate_every_s=0), cpus=[cpu],
                    interference=policy)


def test_a_run_that_shares_its_core_is_flagged(workload: dict[str, Any]) -> None:
    """The hog never stops: the retry (after a short wait for quiet) is disturbed too, so the result is flagged."""
    cpu = available_cores()[-1]
    m = _slow_runner(workload, cpu, InterferencePolicy(retries=1, quiet_wait_s=0.5, load=ProcStatLoad([cpu])))
    try:
        m.start()
        items = _items(workload, [workload["traces"][0]])
        with _hog(cpu, 30.0):
            disturbed = _collect(m, items)[0]
    finally:
        m.close()
    assert disturbed.run_secs, disturbed.error
    others = m.others_busy[disturbed.candidate_id]
    assert others is not None and others > 0.2, (others, disturbed)
    assert disturbed.flagged


def test_the_measurer_retries_through_its_policy(workload: dict[str, Any]) -> None:
    """Every real timing counts as disturbed (tolerance below zero) and the injected load source
    never goes quiet: the runner waits out ``quiet_wait_s`` on the injected clock (5 windows of
    0.2 s), times again, and reports the result flagged since every attempt was disturbed."""
    cpu = available_cores()[-1]
    clock = FakeClock()
    load = ScriptedLoad(clock, [1.0])
    policy = InterferencePolicy(tolerance=-1.0, retries=1, quiet_wait_s=1.0, load=load, clock=clock, poll_s=0.2)
    m = _slow_runner(workload, cpu, policy)
    try:
        m.start()
        result = _collect(m, _items(workload, [workload["traces"][0]]))[0]
    finally:
        m.close()
    assert result.run_secs and len(result.run_secs) == 4, result.error
    assert result.flagged and load.calls == 5
    assert len([t for t in m.timeline if t[0] == "run"]) == 1  # one candidate, one reported run


def test_a_disturbed_calibration_is_not_counted(workload: dict[str, Any]) -> None:
    """A calibration the policy judges disturbed says nothing about the machine: not counted (it
    would flag every result until the next one); one it judges undisturbed counts."""
    m = Measurer(workload["target"], WorkerOptions(build_workers=0, calibrate_every_s=3600),
                 interference=InterferencePolicy(tolerance=-1.0, retries=1, quiet_wait_s=0, load=ScriptedLoad(FakeClock(), [1.0])))
    try:
        m.start()  # calibrates once: disturbed by the policy's measure
        assert m.calibration is not None and m.calibration.samples == 0 and m.calibration.status == "unknown"
        m.interference = InterferencePolicy(tolerance=float("inf"))
        assert m.calibrate()
        assert m.calibration.samples == 1 and m.calibration.status == "ok" and m.calibration.baseline_s > 0
    finally:
        m.close()


def test_calibrator_judges_by_the_fastest_recent_time() -> None:
    cal = Calibrator(tolerance=1.3, window=3)
    assert cal.snapshot().status == "unknown" and not cal.degraded
    cal.add(2.0e-3)  # taken while busy: the baseline corrects itself later
    assert cal.snapshot().status == "ok" and cal.ratio == 1.0
    cal.add(1.0e-3)
    assert cal.snapshot().baseline_s == 1.0e-3 and not cal.degraded
    cal.add(1.5e-3)  # 1.5x its best: throttled or overloaded
    snap = cal.snapshot()
    assert cal.degraded and snap.status == "degraded" and snap.ratio == 1.5 and snap.samples == 3
    for _ in range(3):  # permanently slower (a new power profile): the window lets it settle
        cal.add(1.5e-3)
    assert not cal.degraded and cal.snapshot().baseline_s == 1.5e-3
    cal.failed("calibrate: run: boom")
    assert cal.snapshot().detail == "calibrate: run: boom"
    with pytest.raises(ValueError):
        Calibrator(tolerance=1.0)
