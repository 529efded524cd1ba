"""Which task of a job gets the next batch of trials, and how many: ``GradientScheduler``.

The job's objective is the model's latency, L = Σ weight_i × latency_i, where
latency_i is the task's best measurement or, before it has one, its estimate
(``tuner.estimates``, rescaled by how measured tasks compare with their own
estimates). Trials go where L can drop most:

- First batches, heaviest share of L first: ``first_batch`` trials each (4), or
  one for a task under ``negligible_share`` (~1 %) of L. Later batches are
  ``trials_per_round``.
- Then Ansor's gradient rule (MetaSchedule's ``GradientBased``), per trial since
  batches differ in size. For task i with n_i trials (in flight included) and
  latency b_i::

      backward_i = (b_i(n - w batches) - b_i(n)) / trials in those w batches
      forward_i  = b_i / n_i
      gain_i     = weight_i × (α·backward_i + (1-α)·forward_i)      (α = 0.2, w = 3)

  A task whose candidates all failed so far is weighed by its estimate (it is
  not infinitely promising: a failing softmax must not take the convs' trials).
- A guard keeps the rule honest while bests are still rough: a task never gets
  ahead in trials of an active task with ``share_ratio`` (2×) its share.
- A task stops when it has not improved by ``min_improvement`` in ``patience``
  trials (converged), when it is under ``negligible_share`` of L and its last
  batch did not improve it, when ``no_valid_after`` trials gave nothing valid,
  or when its search is exhausted. A task answered from the database takes no
  trials but counts in L.

Each task keeps ``why`` (``common.protocol.TaskReason``): the scheduler's last
word on it, which the job shows. Pure Python, no TVM: the batch loop feeds it.
Callers change its state only through its methods; ``tasks`` is there to read.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

from common.protocol import JobEndReason, TaskReason

FALLBACK_LATENCY_S = 1e-3
"""The latency assumed for a task with no estimate and nothing measured anywhere in the job."""


@dataclass
class TaskState:
    key: int
    weight: float
    estimate: float | None = None  # seconds per call before any measurement (uncalibrated)
    trials: int = 0
    batches: int = 0
    best: float | None = None
    history: list[tuple[int, float | None]] = field(default_factory=list)  # (trials, best) after each batch
    best_at_trial: int = 0  # trials count when best last improved by min_improvement
    improved_last: bool = False  # the last batch improved best by min_improvement
    exhausted: bool = False
    converged: bool = False
    answered: bool = False  # served from the database's stored best: takes no trials
    why: TaskReason = TaskReason.waiting

    @property
    def active(self) -> bool:
        return not (self.exhausted or self.converged or self.answered)


class GradientScheduler:
    """Chooses tasks and batch sizes; ``started`` when a batch is queued, ``observe`` once it is measured."""

    def __init__(self, *, trials_per_round: int = 16, first_batch: int = 4, alpha: float = 0.2, window: int = 3,
                 patience: int = 64, min_improvement: float = 0.01, negligible_share: float = 0.01,
                 share_ratio: float = 2.0, no_valid_after: int = 16) -> None:
        self.trials_per_round = max(1, trials_per_round)
        self.first_batch = max(1, min(first_batch, self.trials_per_round))
        self.alpha = alpha
        self.window = window
        self.patience = patience
        self.min_improvement = min_improvement
        self.negligible_share = negligible_share
        self.share_ratio = share_ratio
        self.no_valid_after = no_valid_after
        self.tasks: dict[int, TaskState] = {}
        self._order: list[int] = []
        self._pending: dict[int, deque[int]] = {}  # sizes of batches handed out and not yet observed

    # --- tasks in -------------------------------------------------------------

    def add(self, key: int, weight: float, *, estimate: float | None = None,
            answered_best: float | None = None) -> TaskState:
        """A task; ``answered_best``: its stored best (it takes no trials, but counts in the model's time)."""
        state = TaskState(key=key, weight=float(max(weight, 1)),
                          estimate=estimate if estimate and estimate > 0 else None)
        if answered_best is not None:
            state.answered, state.best, state.why = True, answered_best, TaskReason.answered
        self.tasks[key] = state
        self._order.append(key)
        self._pending[key] = deque()
        return state

    def seed(self, key: int, *, trials: int, best: float | None) -> None:
        """Measurements made before this scheduler existed (a resumed job) count as one batch."""
        if trials <= 0:
            return
        t = self.tasks[key]
        t.trials, t.best, t.batches, t.best_at_trial = trials, best, 1, trials
        t.history.append((trials, best))
        t.why = TaskReason.first_batch

    # --- the model's time -----------------------------------------------------

    def calibration(self) -> float:
        """Median of measured best / estimate over the tasks that have both (1 before any)."""
        ratios = [t.best / t.estimate for t in self.tasks.values() if t.best and t.estimate]
        return statistics.median(ratios) if ratios else 1.0

    def latencies(self) -> dict[int, float]:
        """Per task: its best, else its calibrated estimate, else the geometric mean of the others'."""
        scale = self.calibration()
        out = {k: t.best if t.best is not None else t.estimate * scale if t.estimate is not None else None
               for k, t in self.tasks.items()}
        known = [x for x in out.values() if x]
        fallback = math.exp(statistics.fmean(math.log(x) for x in known)) if known else FALLBACK_LATENCY_S
        return {k: x if x is not None else fallback for k, x in out.items()}

    def latency(self, key: int) -> float:
        return self.latencies()[key]

    def model_latency(self) -> float:
        """Σ weight × latency over every task, answered ones included (seconds per model call)."""
        return sum(self.tasks[k].weight * x for k, x in self.latencies().items())

    def shares(self) -> dict[int, float]:
        """Each task's part of the model's time, 0..1."""
        lat = self.latencies()
        total = sum(self.tasks[k].weight * x for k, x in lat.items())
        return {k: (self.tasks[k].weight * x / total if total > 0 else 0.0) for k, x in lat.items()}

    def share(self, key: int) -> float:
        return self.shares()[key]

    # --- choosing ---------------------------------------------------------------

    def active(self) -> list[int]:
        return [k for k in self._order if self.tasks[k].active]

    def unstarted(self) -> list[int]:
        """Active tasks with no batch handed out yet."""
        return [k for k in self.active() if self._handed(k) == 0]

    def batch_size(self, key: int, shares: dict[int, float] | None = None) -> int:
        """Trials for the task's next batch: a small first batch (1 under the negligible share), then a round."""
        if self._handed(key) > 0:
            return self.trials_per_round
        share = (shares or self.shares())[key]
        return 1 if share < self.negligible_share else self.first_batch

    def gain(self, key: int, lat: dict[int, float] | None = None) -> float:
        """Expected drop of Σ weight × latency (seconds) per trial of the task."""
        t = self.tasks[key]
        b = self.latency(key) if lat is None else lat[key]
        n = max(t.trials + sum(self._pending[key]), 1)
        forward = b / n
        backward = forward
        hist = [(trials, best) for trials, best in t.history if best is not None]
        if len(hist) > self.window:
            (n0, b0), (n1, b1) = hist[-1 - self.window], hist[-1]
            if n1 > n0:
                backward = (b0 - b1) / (n1 - n0)
        return t.weight * (self.alpha * backward + (1 - self.alpha) * forward)

    def next(self, exclude: set[int] | frozenset[int] = frozenset()) -> int | None:
        """The task for the next batch (None: every task is done); sets its ``why``.

        ``exclude``: tasks that cannot propose right now.
        """
        self._review()
        candidates = [k for k in self.active() if k not in exclude]
        if not candidates:
            return None
        order = self._order.index
        lat, shares = self.latencies(), self.shares()
        unstarted = [k for k in candidates if self._handed(k) == 0]
        if unstarted:  # first batches, heaviest share of the model first
            pick = max(unstarted, key=lambda k: (shares[k], -order(k)))
            self.tasks[pick].why = TaskReason.first_batch
            return pick
        pick = max(candidates, key=lambda k: (self.gain(k, lat), -self._total(k), -order(k)))
        why = TaskReason.largest_gain
        size = self.batch_size(pick, shares)
        behind = [k for k in candidates
                  if shares[k] >= self.share_ratio * shares[pick] and self._total(k) < self._total(pick) + size]
        if behind:
            pick, why = max(behind, key=lambda k: (shares[k], -order(k))), TaskReason.catching_up
        self.tasks[pick].why = why
        return pick

    def started(self, key: int, trials: int | None = None) -> None:
        """A batch of ``key`` was handed out (counts toward its trials before it is measured)."""
        self._pending[key].append(self.batch_size(key) if trials is None else trials)

    def observe(self, key: int, latencies: list[float | None]) -> None:
        """A measured batch of ``key``: mean seconds per candidate (None for errors)."""
        t = self.tasks[key]
        if self._pending[key]:
            self._pending[key].popleft()
        valid = [x for x in latencies if x]
        t.improved_last = bool(valid) and (t.best is None or min(valid) < t.best * (1 - self.min_improvement))
        if t.improved_last:
            t.best_at_trial = t.trials + len(latencies)
        if valid and (t.best is None or min(valid) < t.best):
            t.best = min(valid)
        t.trials += len(latencies)
        t.batches += 1
        t.history.append((t.trials, t.best))
        if t.best is None and t.trials >= self.no_valid_after:
            self._stop(t, TaskReason.no_valid)
        elif t.best is not None and t.trials - t.best_at_trial >= self.patience:
            self._stop(t, TaskReason.converged)
        self._review()

    def mark_exhausted(self, key: int) -> None:
        """The task's search has nothing new to offer: it takes no more trials."""
        t = self.tasks[key]
        t.exhausted, t.why = True, TaskReason.exhausted

    def converged(self, key: int) -> bool:
        """True once the task stopped improving (no more trials for it)."""
        return self.tasks[key].converged

    def end_reason(self) -> JobEndReason:
        """Why the tasks left nothing to do (when ``next`` says None with no exclusions)."""
        tasks = list(self.tasks.values())
        if all(t.answered for t in tasks):
            return JobEndReason.answered
        if all(t.exhausted or t.answered for t in tasks):
            return JobEndReason.exhausted
        return JobEndReason.converged

    # --- inside -------------------------------------------------------------------

    def _handed(self, key: int) -> int:
        return self.tasks[key].batches + len(self._pending[key])

    def _total(self, key: int) -> int:
        return self.tasks[key].trials + sum(self._pending[key])

    def _stop(self, t: TaskState, why: TaskReason) -> None:
        t.converged, t.why = True, why

    def _review(self) -> None:
        """Stop measured tasks under the negligible share whose last batch did not improve them."""
        shares = self.shares()
        for k in self.active():
            t = self.tasks[k]
            if t.best is not None and t.batches >= 2 and not t.improved_last and not self._pending[k] \
                    and shares[k] < self.negligible_share:
                self._stop(t, TaskReason.negligible)
