"""Which task of a job gets the next batch of trials: ``GradientScheduler``.

The rule of Ansor's task scheduler (and MetaSchedule's ``GradientBased``): the
job's objective is the model's latency, Σ weight_i × latency_i, so the next
batch goes to the task where that sum is expected to drop most per batch.
For task i after r_i batches with best latency b_i(r) (seconds):

    backward_i = (b_i(r_i - w) - b_i(r_i)) / w          what the last w batches bought
    forward_i  = b_i(r_i) / r_i                          optimistic: as much as the average batch so far
    gain_i     = weight_i × (α·backward_i + (1-α)·forward_i)

and the task with the largest gain is chosen (α = 0.2, w = 3 as in Ansor).
First every task gets one batch in turn (no history, no gradient), and a task
with no valid measurement yet comes before any with one. Tasks that are
exhausted (no new schedules) or have stopped improving — no gain of more than
``min_improvement`` over their last ``patience`` trials — take no more trials.

Pure Python, no TVM: the job runner feeds it measured batches. Callers change
its state only through its methods; ``tasks`` is there to read.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TaskState:
    key: int
    weight: float
    trials: int = 0
    batches: int = 0
    best: float | None = None
    history: list[float | None] = field(default_factory=list)  # best after each batch
    best_at_trial: int = 0  # trials count when best last improved by min_improvement
    exhausted: bool = False
    converged: bool = False
    answered: bool = False  # served from the database's stored best: takes no trials

    @property
    def active(self) -> bool:
        return not (self.exhausted or self.converged or self.answered)


class GradientScheduler:
    """Chooses tasks batch by batch; ``observe`` after each measured batch."""

    def __init__(self, *, alpha: float = 0.2, window: int = 3, patience: int = 64, min_improvement: float = 0.01,
                 warmup_batches: int = 1) -> None:
        self.alpha = alpha
        self.window = window
        self.patience = patience
        self.min_improvement = min_improvement
        self.warmup_batches = warmup_batches
        self.tasks: dict[int, TaskState] = {}
        self._order: list[int] = []
        self._pending: dict[int, int] = {}  # batches handed out and not yet observed

    def add(self, key: int, weight: float, *, answered: bool = False) -> TaskState:
        state = TaskState(key=key, weight=float(max(weight, 1)), answered=answered)
        self.tasks[key] = state
        self._order.append(key)
        return state

    def active(self) -> list[int]:
        return [k for k in self._order if self.tasks[k].active]

    def unstarted(self) -> list[int]:
        """Active tasks with no batch handed out yet."""
        return [k for k in self.active() if self.tasks[k].batches + self._pending.get(k, 0) == 0]

    def gain(self, key: int) -> float:
        """Expected drop of weight × latency (seconds) from one more batch of the task."""
        t = self.tasks[key]
        if t.best is None:
            return float("inf")
        hist = [b for b in t.history if b is not None]
        r = max(t.batches, 1)
        forward = t.best / r
        if len(hist) > self.window:
            backward = (hist[-1 - self.window] - hist[-1]) / self.window
        else:
            backward = forward
        return t.weight * (self.alpha * backward + (1 - self.alpha) * forward)

    def next(self, exclude: set[int] | frozenset[int] = frozenset()) -> int | None:
        """The task for the next batch (None: every task is done).

        ``exclude``: tasks that cannot propose right now (e.g. one with a batch in flight
        when pipelining, whose search has not seen its last results).
        """
        candidates = [k for k in self.active() if k not in exclude]
        if not candidates:
            return None
        # Warm-up: every task its first batch(es), in order, before any gradient.
        for k in candidates:
            if self.tasks[k].batches + self._pending.get(k, 0) < self.warmup_batches:
                return k
        # A task with nothing valid yet has an unknown (infinite) gain: try it before the others.
        return max(candidates, key=lambda k: (self.gain(k), -self.tasks[k].trials, -self._order.index(k)))

    def started(self, key: int) -> None:
        """A batch of ``key`` was handed out (counts toward the warm-up before it is measured)."""
        self._pending[key] = self._pending.get(key, 0) + 1

    def observe(self, key: int, latencies: list[float | None]) -> None:
        """A measured batch of ``key``: mean seconds per candidate (None for errors)."""
        t = self.tasks[key]
        if self._pending.get(key):
            self._pending[key] -= 1
        valid = [x for x in latencies if x]
        if valid and (t.best is None or min(valid) < t.best * (1 - self.min_improvement)):
            t.best_at_trial = t.trials + len(latencies)
        if valid and (t.best is None or min(valid) < t.best):
            t.best = min(valid)
        t.trials += len(latencies)
        t.batches += 1
        t.history.append(t.best)
        if t.best is not None and t.trials - t.best_at_trial >= self.patience:
            t.converged = True

    def mark_exhausted(self, key: int) -> None:
        """The task's search has nothing new to offer: it takes no more trials."""
        self.tasks[key].exhausted = True

    def converged(self, key: int) -> bool:
        """True once the task stopped improving (no more trials for it)."""
        return self.tasks[key].converged

    def seed(self, key: int, *, trials: int, best: float | None) -> None:
        """Measurements made before this scheduler existed (a resumed job) count as one batch."""
        if trials <= 0:
            return
        t = self.tasks[key]
        t.trials, t.best, t.batches, t.best_at_trial = trials, best, 1, trials
        t.history.append(best)
