"""One task's MetaSchedule search, driven by us: ``TaskSearch``.

MetaSchedule's own pieces do the searching (TVM_NOTES §6): a ``TuneContext``
with the post-order-apply space generator and the evolutionary strategy, a cost
model, a database. We drive its loop by hand because measuring happens
elsewhere: ``propose`` returns candidates (traces as JSON) for the queue, and
``observe`` takes back what workers measured, whenever that is.

The database the strategy sees is normally ``db.ms_database.SqlDatabase`` (the
SQL tables, read through, so a resumed or later job starts from the fleet's
best); a ``MemoryDatabase`` is the default for a search without SQL.

MetaSchedule's strategy only remembers the schedules it proposed itself, so a
fresh search would happily propose again a schedule measured before a restart
or by another job. ``warm_start`` feeds such measurements to the cost model and
to a set of already-measured modules; ``propose`` drops anything in that set.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.protocol import MeasurementOutcome
from common.tvm_json import apply_trace, trace_to_json
from tuner.errors import TVM_ERRORS
from tuner.cost_models import DEFAULT_COST_MODEL, DEFAULT_WARMUP_SAMPLES, CostModelKind, make_cost_model

if TYPE_CHECKING:
    from tvm.ir import IRModule

    from common.settings import Settings

log = logging.getLogger(__name__)
# MetaSchedule logs a summary per generation step at INFO; keep it to warnings unless configured.
_ms_log = logging.getLogger(f"{__name__}.ms")
if _ms_log.level == logging.NOTSET:
    _ms_log.setLevel(logging.WARNING)

# prepare_tvm stubs a package and registers tensor intrinsics: once, even with several job threads.
_prepare_lock = threading.Lock()


@dataclass(frozen=True)
class SearchConfig:
    """Knobs of the evolutionary search; the defaults are MetaSchedule's own (``tune_tir``)."""

    population_size: int = 512
    init_measured_ratio: float = 0.2
    init_min_unmeasured: int = 50
    max_fail_count: int = 5
    genetic_num_iters: int = 4
    genetic_mutate_prob: float = 0.85
    genetic_max_fail_count: int = 10
    eps_greedy: float = 0.05
    num_warmup_samples: int = DEFAULT_WARMUP_SAMPLES
    max_empty_rounds: int = 3
    """Rounds in a row that yield no new schedule before the space counts as exhausted."""
    cost_model: CostModelKind = DEFAULT_COST_MODEL
    """Which cost model the job's searches share (``tuner.cost_models``); by default the settings'."""
    patience_trials: int = 128
    """A task whose best has not improved by 1 % in this many of its trials stops early."""
    transfer_seeds: int = 8
    """A workload new to the target key first measures up to this many of its family's best
    schedules, adapted to its shapes (``tuner.transfer``); 0 turns that off."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "cost_model", CostModelKind(self.cost_model))  # accepts the plain strings too

    @classmethod
    def from_settings(cls, settings: Settings) -> SearchConfig:
        """The settings' cost model and population; the initial unmeasured sample shrinks with the population."""
        return cls(cost_model=CostModelKind(settings.cost_model), population_size=settings.search_population,
                   init_min_unmeasured=min(cls.init_min_unmeasured, settings.search_population // 4))

    def strategy(self) -> Any:
        from tvm.s_tir import meta_schedule as ms

        return ms.search_strategy.EvolutionarySearch(
            population_size=self.population_size,
            init_measured_ratio=self.init_measured_ratio,
            init_min_unmeasured=self.init_min_unmeasured,
            max_fail_count=self.max_fail_count,
            genetic_num_iters=self.genetic_num_iters,
            genetic_mutate_prob=self.genetic_mutate_prob,
            genetic_max_fail_count=self.genetic_max_fail_count,
            eps_greedy=self.eps_greedy,
        )


def runner_result(outcome: MeasurementOutcome) -> Any:
    """A measurement as MetaSchedule's ``RunnerResult``, which its cost model and strategy take."""
    from tvm.s_tir import meta_schedule as ms

    if outcome.run_secs:
        return ms.runner.RunnerResult(run_secs=[float(s) for s in outcome.run_secs], error_msg=None)
    return ms.runner.RunnerResult(run_secs=None, error_msg=outcome.error or "no result")


@dataclass(frozen=True)
class Proposal:
    """A candidate ready for the queue: its trace as JSON and MetaSchedule's ``MeasureCandidate``.

    ``transferred``: adapted from another workload of the family (``add_transfers``),
    not proposed by the strategy, so the strategy is not told about its result.
    """

    trace_json: str
    candidate: Any  # ms.MeasureCandidate
    transferred: bool = False


class TaskSearch:
    """The evolutionary search of one workload on one target.

    ``propose(n)`` → up to ``n`` new candidates (never one already measured or
    proposed); ``observe(proposals, outcomes)`` → the cost model and the
    strategy learn from them. ``exhausted`` turns True when MetaSchedule has
    nothing new to offer. Not thread-safe: one thread drives one search.
    """

    def __init__(
        self,
        mod: IRModule,
        target: dict[str, Any] | str,
        *,
        max_trials: int,
        num_trials_per_iter: int,
        database: Any | None = None,
        cost_model: Any | None = None,
        num_threads: int = 2,
        seed: int | None = None,
        config: SearchConfig = SearchConfig(),
        task_name: str = "main",
    ) -> None:
        target_dict = json.loads(target) if isinstance(target, str) else dict(target)
        from common.tvm_env import prepare_tvm

        with _prepare_lock:
            prepare_tvm((str(target_dict["kind"]),))  # before TuneContext: else a ~50 s import
        import tvm
        from tvm.s_tir import meta_schedule as ms

        self.mod = mod
        self.task_name = task_name
        self.config = config
        self.target = tvm.target.Target(target_dict)
        self.ctx = ms.TuneContext(
            mod=mod,
            target=self.target,
            space_generator="post-order-apply",
            search_strategy=config.strategy(),
            task_name=task_name,
            num_threads=num_threads,
            rand_state=-1 if seed is None else seed,
            logger=_ms_log,
        )
        self.database = database if database is not None else ms.database.MemoryDatabase()
        self.cost_model = cost_model or make_cost_model(
            num_tuning_cores=num_threads, num_warmup_samples=config.num_warmup_samples
        )
        self.workload = self.database.commit_workload(mod)
        self.args_info = list(ms.arg_info.ArgInfo.from_entry_func(mod, remove_preproc=True))
        spaces = self.ctx.generate_design_space()
        if not spaces:
            raise ValueError(f"task {task_name}: MetaSchedule generated no design space")
        self.strategy = self.ctx.search_strategy
        self.strategy.pre_tuning(
            max_trials=max_trials,
            num_trials_per_iter=num_trials_per_iter,
            design_spaces=spaces,
            database=self.database,
            cost_model=self.cost_model,
        )
        self._seen: set[int] = set()  # structural hashes of scheduled modules measured or proposed
        self._transfers: list[Proposal] = []  # adapted schedules of the family, proposed first
        self._backlog: list[Proposal] = []  # a round's candidates beyond what was asked, proposed next
        self._empty_rounds = 0
        self._closed = False
        self.exhausted = False
        self.best_secs: float | None = None
        self.best_trace_json: str | None = None
        self.observed = 0

    # --- candidates in --------------------------------------------------------

    @staticmethod
    def _key(sch: Any) -> int:
        import tvm_ffi

        return int(tvm_ffi.structural_hash(sch.mod))

    def rebuild(self, trace_json: str) -> Proposal | None:
        """A stored candidate as a ``Proposal`` (its trace replayed on the workload); None if it no longer replays."""
        from tvm.s_tir import meta_schedule as ms

        try:
            sch = apply_trace(self.mod, trace_json)
        except TVM_ERRORS as exc:
            log.warning("task %s: a stored trace does not replay, skipped: %s", self.task_name, str(exc)[:300])
            return None
        return Proposal(trace_json, ms.MeasureCandidate(sch, self.args_info))

    def warm_start(self, trace_jsons: Sequence[str], outcomes: Sequence[MeasurementOutcome]) -> list[Proposal]:
        """Learn from measurements made before this search existed.

        A resumed job's own measurements, or other jobs' on the same workload: the
        cost model is updated with them and ``propose`` will not offer them again.
        Returns the proposals rebuilt (those whose traces replayed).
        """
        assert len(trace_jsons) == len(outcomes)
        pairs = [(p, o) for p, o in ((self.rebuild(t), o) for t, o in zip(trace_jsons, outcomes)) if p is not None]
        if pairs:
            self.observe([p for p, _ in pairs], [o for _, o in pairs], notify=False)
        return [p for p, _ in pairs]

    def add_transfers(self, sources: Sequence[tuple[Any, str]], limit: int) -> int:
        """Queue up to ``limit`` schedules of other workloads of the family, adapted, for ``propose`` to offer first.

        ``sources``: (their IRModule, a trace JSON of it), best first. Returns how
        many carried over (replayed on this workload with refitted tiles and
        passed MetaSchedule's postprocessors); duplicates are dropped.
        """
        from tvm.s_tir import meta_schedule as ms

        from tuner.transfer import adapt_trace

        postprocs = list(self.ctx.space_generator.postprocs)
        added = 0
        for src_mod, trace_json in sources:
            if added >= limit:
                break
            sch = adapt_trace(src_mod, trace_json, self.mod, postprocs)
            if sch is None:
                continue
            key = self._key(sch)
            if key in self._seen:
                continue
            self._seen.add(key)
            self._transfers.append(
                Proposal(trace_to_json(sch.trace), ms.MeasureCandidate(sch, self.args_info), transferred=True))
            added += 1
        return added

    def learn_from(self, mod: Any, measured: Sequence[tuple[str, Sequence[float]]]) -> int:
        """Train the cost model on another workload's measurements (one group of its own, as
        MetaSchedule groups each task's); returns how many replayed.

        Why: MetaSchedule's ``XGBModel`` scores at random until it has 100 samples, so a new
        workload's first generations go unguided; its family's measurements on this target
        let it rank from the first one (``tune_relax`` shares one model across a model's
        tasks in the same way).
        """
        from tvm.s_tir import meta_schedule as ms

        cands, results = [], []
        args_info = list(ms.arg_info.ArgInfo.from_entry_func(mod, remove_preproc=True))
        for trace_json, secs in measured:
            try:
                cands.append(ms.MeasureCandidate(apply_trace(mod, trace_json), args_info))
            except TVM_ERRORS:  # a trace that no longer replays teaches nothing
                continue
            results.append(ms.runner.RunnerResult(run_secs=[float(x) for x in secs], error_msg=None))
        if cands:
            ctx = ms.TuneContext(mod=mod, target=self.target, task_name="family",
                                 num_threads=self.ctx.num_threads)
            self.cost_model.update(ctx, cands, results)
        return len(cands)

    def expect(self, proposals: Sequence[Proposal]) -> None:
        """Mark proposals as in flight (queued before this search existed) so they are not proposed again."""
        for p in proposals:
            self._seen.add(self._key(p.candidate.sch))

    # --- the loop ---------------------------------------------------------------

    def propose(self, n: int) -> list[Proposal]:
        """Up to ``n`` new candidates; [] when there are none this round (see ``exhausted``).

        A search round yields ``num_trials_per_iter`` candidates whatever ``n`` is
        (a first batch asks for fewer); the rest wait in a backlog, proposed before
        the next round's, instead of being thrown away: the round is most of the cost.
        """
        if self.exhausted or n <= 0:
            return []
        if self._transfers:
            taken, self._transfers = self._transfers[:n], self._transfers[n:]
            return taken
        taken, self._backlog = self._backlog[:n], self._backlog[n:]
        if len(taken) == n:
            return taken
        cands = self.strategy.generate_measure_candidates()
        if cands is None:
            log.info("task %s: search space exhausted", self.task_name)
            self.exhausted = True
            return taken
        fresh = []
        for cand in cands:
            key = self._key(cand.sch)
            if key in self._seen:
                continue
            self._seen.add(key)
            fresh.append(Proposal(trace_to_json(cand.sch.trace), cand))
        if fresh:
            self._empty_rounds = 0
        else:
            self._empty_rounds += 1
            if self._empty_rounds >= self.config.max_empty_rounds:
                log.info("task %s: %d rounds without a new schedule, exhausted", self.task_name, self._empty_rounds)
                self.exhausted = True
        taken += fresh
        taken, self._backlog = taken[:n], taken[n:]
        return taken

    def observe(self, proposals: Sequence[Proposal], outcomes: Sequence[MeasurementOutcome], *, notify: bool = True) -> None:
        """Feed measurements back: database, cost model, and (``notify``) the strategy."""
        from tvm.s_tir import meta_schedule as ms

        assert len(proposals) == len(outcomes)
        if not proposals:
            return
        cands = [p.candidate for p in proposals]
        results = [runner_result(o) for o in outcomes]
        feed_back = not getattr(self.database, "read_only", False)  # SqlDatabase: workers' reports stored them
        for cand, result in zip(cands, results):
            self._seen.add(self._key(cand.sch))
            if feed_back:
                self.database.commit_tuning_record(
                    ms.database.TuningRecord(cand.sch.trace, self.workload, result.run_secs, self.target, cand.args_info)
                )
        self.cost_model.update(self.ctx, cands, results)
        if notify:
            own = [(c, r) for c, r, p in zip(cands, results, proposals) if not p.transferred]
            if own:
                self.strategy.notify_runner_results([c for c, _ in own], [r for _, r in own])
        self.observed += len(proposals)
        for proposal, outcome in zip(proposals, outcomes):
            mean = outcome.mean_secs
            if mean is not None and (self.best_secs is None or mean < self.best_secs):
                self.best_secs, self.best_trace_json = mean, proposal.trace_json

    def close(self) -> None:
        """End the strategy's tuning session (idempotent)."""
        if not self._closed:
            self._closed = True
            self.strategy.post_tuning()
