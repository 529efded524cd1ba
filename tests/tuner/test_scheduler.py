"""The gradient task scheduler: warm-up in turn, then trials where weight × latency can drop most."""

from __future__ import annotations

from tuner.scheduler import GradientScheduler


def _run(s: GradientScheduler, batches: int, latency) -> list[int]:  # type: ignore[no-untyped-def]
    picks = []
    for _ in range(batches):
        key = s.next()
        if key is None:
            break
        s.started(key)
        picks.append(key)
        s.observe(key, latency(key, s.tasks[key].batches))
    return picks


def test_every_task_first_then_the_heaviest() -> None:
    s = GradientScheduler(patience=10_000)
    s.add(1, weight=1)
    s.add(2, weight=10)
    s.add(3, weight=1)
    # Same latency curve for all: only the weight differs.
    picks = _run(s, 12, lambda key, b: [1e-3 / (1 + b)] * 4)
    assert picks[:3] == [1, 2, 3]  # warm-up in order
    assert picks[3:].count(2) > len(picks[3:]) // 2  # then mostly the task the model calls 10×


def test_pending_batches_count_toward_warm_up() -> None:
    """Pipelining: a batch handed out but not measured yet still counts as the task's first."""
    s = GradientScheduler()
    s.add(1, weight=1)
    s.add(2, weight=1)
    first = s.next()
    s.started(first)
    assert s.next() == 2 and first == 1


def test_unmeasured_and_failing_tasks_first_then_gradient() -> None:
    s = GradientScheduler()
    s.add(1, weight=1)
    s.add(2, weight=1)
    for key in (1, 2):
        s.started(key)
    s.observe(1, [2e-3, 1e-3])
    s.observe(2, [None, None])  # all errors: no best yet, infinite gain
    assert s.next() == 2
    s.started(2)
    s.observe(2, [5e-3])
    assert s.gain(1) < s.gain(2)  # 5 ms with one batch can drop more than 1 ms


def test_a_task_that_stops_improving_stops() -> None:
    s = GradientScheduler(patience=8, min_improvement=0.01)
    s.add(1, weight=1)
    s.add(2, weight=1)
    _run(s, 20, lambda key, b: [1e-3] * 4 if key == 1 else [1e-3 / (1 + b)] * 4)
    assert s.converged(1) and not s.converged(2)
    assert s.tasks[1].trials <= 12  # 4 to set the best, 8 without a 1 % gain
    assert 1 not in s.active()


def test_exhausted_and_answered_tasks_take_nothing() -> None:
    s = GradientScheduler()
    s.add(1, weight=1, answered=True)
    s.add(2, weight=1)
    s.mark_exhausted(2)
    assert s.next() is None


def test_seed_from_a_resumed_job() -> None:
    s = GradientScheduler()
    s.add(1, weight=1)
    s.add(2, weight=1)
    s.seed(1, trials=8, best=1e-3)
    assert s.next() == 2  # task 1 already had its warm-up before the restart
    assert s.tasks[1].trials == 8 and s.tasks[1].best == 1e-3
