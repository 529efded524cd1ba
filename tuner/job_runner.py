"""Run one job to its end, resumably: ``run_job``.

A job runs batch by batch. The task scheduler (``tuner.scheduler``, the
gradient rule of Ansor/MetaSchedule) picks the task whose next batch should cut
Σ weight × latency most; that task's search proposes up to
``trials_per_round`` candidates (never more than the budget left); they go into
the queue in one transaction. Search is pipelined with measurement: up to
``Settings.tuner_pipeline_depth`` batches are queued at once, so the next batch is
generated while workers measure the current one, and each measured batch goes
back to its task's search (cost model, strategy) and to the scheduler.

A workload the database already has a best config for (a finished job measured
it on this target key) is answered from it at once, with no trials, unless the
job asks to ``retune``. A workload the key has never measured starts from its
family (``tuner.transfer``): its first batch is the best schedules of the same
operator at other shapes, adapted. A task whose best stops improving stops early
(``SearchConfig.patience_trials``); one whose space is exhausted stops too.

The cost model is ``cost_model.XGBCostModel``, warm from the target key's stored
model, which is retrained from every stored measurement at the job's start and
end when the data has grown enough (``cost_model.store.refresh``).

The budget is ``job.trials`` measurements in total across tasks (errors
count). It is counted from the database, so a restart loses nothing and
repeats nothing: on (re)claim, the job's measured candidates count against the
budget and seed each search (``SqlDatabase`` gives the strategy the stored
records; the cost model is warmed with them), and candidates still pending or
leased from before the restart are awaited first and fed in like any batch.

The job's liveness is a heartbeat thread (``db.job_claims.job_heartbeat``
every ``tuner_heartbeat_s``), independent of how long a search round takes.
When the heartbeat says the job is no longer ours (cancelled, or reclaimed
after we were silent too long) the runner stops; a cancelled job's unmeasured
candidates are withdrawn. ``stop`` (the daemon shutting down) hands the job
back to the queue (``release_job``) so another tuner resumes it at once. An
exception in the search marks the job failed with its repr; it never dies
silently.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.engine import session_scope
from db.job_claims import (
    RUNNING,
    CandidateOutcome,
    JobSpec,
    TaskSpec,
    finish_job,
    fleet_best,
    job_candidates,
    job_heartbeat,
    job_status,
    load_job,
    release_job,
    tuned_workloads,
)
from db.queue import CANCELLED, LEASED, PENDING, cancel_candidates, enqueue_candidates
from common.protocol import JobStatus
from common.settings import Settings
from tuner.scheduler import GradientScheduler
from tuner.search import Outcome, Proposal, SearchConfig, TaskSearch, make_cost_model

log = logging.getLogger(__name__)

# How many of the fleet's best measurements of a workload (other jobs) warm a new search.
FLEET_WARM_RECORDS = 64


def run_job(
    job_id: int,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    owner: str,
    stop: threading.Event,
    search_config: SearchConfig | None = None,
) -> None:
    """Run job ``job_id`` (already claimed by ``owner``) until it is done, lost, cancelled or stopped.

    Ends the job as ``done`` (budget spent or every space exhausted) or
    ``failed`` (an exception, logged, its repr stored); hands it back to the
    queue when ``stop`` is set; returns without touching it when it is not (or
    no longer) ``owner``'s.
    """
    _JobRun(
        job_id,
        settings=settings,
        session_factory=session_factory,
        owner=owner,
        stop=stop,
        config=search_config or SearchConfig(cost_model=settings.cost_model),
    ).run()


def _outcome(row: CandidateOutcome) -> Outcome:
    return Outcome(run_secs=row.run_secs, error=None if row.run_secs else row.error)


def _ms(secs: float | None) -> str:
    return "-" if secs is None else f"{secs * 1e3:.4g} ms"


@dataclass
class _Task:
    spec: TaskSpec
    search: TaskSearch
    done: int = 0  # this job's measurements of the task
    valid: int = 0
    transfer_pending: bool = False  # new to the key: carry its family's bests over before its first batch


@dataclass
class _Round:
    number: int
    inflight: dict[int, tuple[_Task, Proposal | None]] = field(default_factory=dict)


class _Stop(Exception):
    """Internal: leave the loop because the job is no longer ours or the tuner is stopping."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why  # "stopped" | "lost"


class _JobRun:
    def __init__(
        self,
        job_id: int,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        owner: str,
        stop: threading.Event,
        config: SearchConfig,
    ) -> None:
        self.job_id = job_id
        self.settings = settings
        self.factory = session_factory
        self.owner = owner
        self.stop = stop
        self.config = config
        self.lost = threading.Event()
        self.finished = threading.Event()
        self.spec: JobSpec | None = None
        self.tasks: list[_Task] = []
        self.answered: dict[str, float] = {}  # task name -> stored best seconds (0 trials spent)
        self.scheduler = GradientScheduler(patience=config.patience_trials)
        self.used = 0  # candidates of this job that count against the budget (measured or awaited)
        self.learned_from: set[int] = set()  # family members whose measurements the cost model has had

    # --- lifecycle ---------------------------------------------------------------

    def run(self) -> None:
        with session_scope(self.factory) as session:
            spec = load_job(session, job_id=self.job_id)
        if spec.status != RUNNING or spec.tuner_owner != self.owner:
            log.warning("job %d is %s and owned by %r, not %r: not running it", spec.id, spec.status, spec.tuner_owner, self.owner)
            return
        beat = threading.Thread(target=self._heartbeat_loop, name=f"job-{self.job_id}-heartbeat", daemon=True)
        beat.start()
        try:
            why = self._tune(spec)
        except _Stop as stopped:
            why = stopped.why
        except (OperationalError, InterfaceError) as exc:
            # The database went away mid-query (a restart, a failover, a dropped
            # connection): not the job's fault. Hand it back; it resumes from the database.
            log.warning("job %d: database connection lost (%s); handing the job back to resume it", self.job_id, exc.orig)
            why = "stopped"
        except Exception as exc:  # noqa: BLE001  (any search failure ends the job as failed, loudly)
            log.exception("job %d failed", self.job_id)
            self._fail(repr(exc))
            return
        finally:
            self.finished.set()
            beat.join()
            for task in self.tasks:
                try:
                    task.search.close()
                except Exception:  # noqa: BLE001
                    log.debug("closing the search of task %d failed", task.spec.id, exc_info=True)
        if why == "done":
            self._finish_done()
        elif why == "stopped":
            self._release()
        else:
            self._after_lost()

    def _heartbeat_loop(self) -> None:
        interval = self.settings.tuner_heartbeat_s
        while not self.finished.wait(interval):
            try:
                with session_scope(self.factory) as session:
                    alive = job_heartbeat(session, job_id=self.job_id, owner=self.owner)
            except Exception as exc:  # noqa: BLE001  (a database hiccup: the grace period covers a missed beat)
                log.warning("job %d: heartbeat failed, retrying: %s", self.job_id, exc)
                continue
            if not alive:
                self.lost.set()
                return

    def _check(self) -> None:
        if self.lost.is_set():
            raise _Stop("lost")
        if self.stop.is_set():
            raise _Stop("stopped")

    def _finish_done(self) -> None:
        best = {t.spec.name: _ms(t.search.best_secs) for t in self.tasks}
        best.update({name: _ms(secs) + " (stored)" for name, secs in self.answered.items()})
        with session_scope(self.factory) as session:
            won = finish_job(session, job_id=self.job_id, owner=self.owner, status=JobStatus.done.value)
        if won:
            log.info("job %d done: %d trials; best per task: %s", self.job_id, self.used, best)
            self._refresh_cost_model()
        else:
            self._after_lost()

    def _refresh_cost_model(self) -> None:
        """Retrain the target key's stored cost model if the data grew enough; never fails the job."""
        if self.config.cost_model != "tunehub" or self.spec is None:
            return
        try:
            from cost_model.store import refresh

            refresh(self.factory, target_key=self.spec.target_key, target=self.spec.target_json,
                    nthread=self.settings.search_threads)
        except Exception:  # noqa: BLE001  (a stale model is still a model)
            log.exception("job %d: retraining the cost model failed", self.job_id)

    def _make_cost_model(self, spec: JobSpec):  # type: ignore[no-untyped-def]
        threads = self.settings.search_threads
        if self.config.cost_model == "tunehub":
            try:
                from cost_model.store import load_cost_model

                self._refresh_cost_model()
                model = load_cost_model(self.factory, target_key=spec.target_key, num_threads=threads)
                log.info("job %d: cost model %s", spec.id,
                         f"version {model.base_version} from the database" if model.base_version else "new (no stored model yet)")
                return model
            except Exception:  # noqa: BLE001
                log.exception("job %d: could not load the stored cost model; using MetaSchedule's", spec.id)
        return make_cost_model(num_tuning_cores=threads, num_warmup_samples=self.config.num_warmup_samples)

    def _fail(self, error: str) -> None:
        try:
            with session_scope(self.factory) as session:
                if finish_job(session, job_id=self.job_id, owner=self.owner, status=JobStatus.failed.value, error=error):
                    # Its queued work is now waste for the workers; measured results stay.
                    cancel_candidates(session, task_ids=[t.id for t in load_job(session, job_id=self.job_id).tasks])
        except Exception:  # noqa: BLE001
            log.exception("job %d: could not mark it failed (another tuner will reclaim it after the grace period)", self.job_id)

    def _release(self) -> None:
        try:
            with session_scope(self.factory) as session:
                released = release_job(session, job_id=self.job_id, owner=self.owner)
        except (OperationalError, InterfaceError) as exc:
            log.warning("job %d: could not hand it back (%s); it is reclaimed after the grace period", self.job_id, exc.orig)
            return
        if released:
            log.info("job %d: tuner stopping, handed back to the queue after %d trials", self.job_id, self.used)
        else:
            self._after_lost()

    def _after_lost(self) -> None:
        with session_scope(self.factory) as session:
            status = job_status(session, job_id=self.job_id)
            if status == JobStatus.cancelled.value:
                withdrawn = cancel_candidates(session, task_ids=[t.spec.id for t in self.tasks])
                log.info("job %d cancelled: stopped after %d trials, withdrew %d queued candidates", self.job_id, self.used, withdrawn)
                return
        log.warning("job %d is no longer ours (status %s): stopped", self.job_id, status)

    # --- tuning ------------------------------------------------------------------

    def _tune(self, spec: JobSpec) -> str:
        from db.ms_database import SqlDatabase  # imports TVM
        from common.tvm_json import workload_from_json

        self.spec = spec
        if not spec.tasks:
            log.info("job %d has no tasks: nothing to tune", spec.id)
            return "done"
        target = json.loads(spec.target_json)
        threads = self.settings.search_threads
        with session_scope(self.factory) as session:
            existing = job_candidates(session, job_id=spec.id)
            stored = {} if spec.retune else tuned_workloads(
                session, workload_ids=[t.workload_id for t in spec.tasks], target_key=spec.target_key,
                exclude_job_id=spec.id)
        by_task: dict[int, list[CandidateOutcome]] = defaultdict(list)
        for row in existing:
            by_task[row.task_id].append(row)
        # A workload tuned before answers from its stored best, unless this job already started on it.
        answered = [t for t in spec.tasks if t.workload_id in stored and not by_task.get(t.id)]
        for task_spec in answered:
            self.answered[task_spec.name] = stored[task_spec.workload_id]
            log.info("job %d task %s: answered from the database's best (%s), 0 trials (retune to search again)",
                     spec.id, task_spec.name, _ms(stored[task_spec.workload_id]))
        to_tune = [t for t in spec.tasks if t not in answered]
        if not to_tune:
            log.info("job %d: every task was tuned before; answered from the database", spec.id)
            return "done"

        database = SqlDatabase(self.factory, target=target, target_key=spec.target_key)
        cost_model = self._make_cost_model(spec)
        resumed = _Round(number=max((row.round for row in existing), default=0))
        for task_spec in to_tune:
            self._check()
            search = TaskSearch(
                workload_from_json(task_spec.mod_json),
                target,
                max_trials=spec.trials,
                num_trials_per_iter=spec.trials_per_round,
                database=database,
                cost_model=cost_model,
                num_threads=threads,
                config=self.config,
                task_name=task_spec.name,
            )
            task = _Task(task_spec, search)
            self.tasks.append(task)
            self.scheduler.add(task_spec.id, task_spec.weight)
            self._seed(spec, task, by_task.get(task_spec.id, []), resumed)
        if existing:
            log.info(
                "job %d resumed: %d trials measured, %d in flight, %d tasks",
                spec.id, self.used - len(resumed.inflight), len(resumed.inflight), len(self.tasks),
            )
        else:
            log.info("job %d started: %d tasks (%d answered from the database), %d trials, %d per batch",
                     spec.id, len(spec.tasks), len(answered), spec.trials, spec.trials_per_round)

        by_id = {t.spec.id: t for t in self.tasks}
        queued: deque[_Round] = deque([resumed] if resumed.inflight else [])
        number = resumed.number
        while True:
            self._check()
            remaining = spec.trials - self.used
            if remaining > 0 and len(queued) < self.settings.tuner_pipeline_depth:
                key = self.scheduler.next()
                if key is not None:
                    number += 1
                    rnd = self._propose_batch(spec, by_id[key], number, remaining)
                    if rnd.inflight:
                        self.scheduler.started(key)
                        queued.append(rnd)
                    continue  # propose again (pipelining), or pick another task if this one had none
            if queued:
                self._await_and_feed(spec, queued.popleft())
                continue
            if remaining <= 0:
                return "done"
            if all(t.search.exhausted for t in self.tasks):
                log.info("job %d: every task's search space is exhausted after %d trials", spec.id, self.used)
            else:
                log.info("job %d: every task stopped improving; done after %d of %d trials",
                         spec.id, self.used, spec.trials)
            return "done"

    def _seed(self, spec: JobSpec, task: _Task, rows: list[CandidateOutcome], resumed: _Round) -> None:
        """Warm one task's search from the database: its own measurements, the fleet's best, and work in flight."""
        measured = [r for r in rows if r.measured]
        task.done = len(measured)
        task.valid = sum(1 for r in measured if r.run_secs)
        with session_scope(self.factory) as session:
            fleet = fleet_best(
                session,
                workload_id=task.spec.workload_id,
                target_key=spec.target_key,
                exclude_task_id=task.spec.id,
                limit=FLEET_WARM_RECORDS,
            )
        known = measured + fleet
        if known:  # one cost-model update (one XGBoost training) for both
            task.search.warm_start([r.trace_json for r in known], [_outcome(r) for r in known])
        if fleet:
            log.info("job %d task %s: warmed with the fleet's %d best measurements", spec.id, task.spec.name, len(fleet))
        elif not rows:
            task.transfer_pending = True  # at its first batch: by then its siblings may have measurements
        own = [_outcome(r).mean_secs for r in measured]
        self.scheduler.seed(task.spec.id, trials=len(measured), best=min((m for m in own if m), default=None))
        waiting = [r for r in rows if not r.measured and r.state in (PENDING, LEASED)]
        for row in waiting:
            proposal = task.search.rebuild(row.trace_json)
            if proposal is not None:
                task.search.expect([proposal])
            resumed.inflight[row.candidate_id] = (task, proposal)
        self.used += len(measured) + len(waiting)

    def _transfer(self, spec: JobSpec, task: _Task) -> None:
        """A workload new to the key: its first batch measures its family's best schedules, adapted.

        Called when the task's first batch is proposed, so a job's later tasks also
        start from its earlier tasks of the same family (a model's dense layers).

        Labels the key's measured workloads with their family first (lazily: the
        key needs TVM). Never fails the job: without transfers the search starts
        from random samples, as MetaSchedule's does.
        """
        limit = min(self.config.transfer_seeds, spec.trials_per_round)
        if limit <= 0:
            return
        from db.families import family_bests, label, member_measurements, unlabelled
        from common.tvm_json import workload_from_json
        from tuner.transfer import UNKNOWN_FAMILY, family_key

        try:
            family = family_key(task.search.mod)
            with session_scope(self.factory) as session:
                todo = unlabelled(session, target_key=spec.target_key)
            keys = {task.spec.workload_id: family}
            for wid, mod_json in todo:
                try:
                    keys[wid] = family_key(workload_from_json(mod_json))
                except Exception:  # noqa: BLE001  (a module we cannot read: never a family member)
                    keys[wid] = UNKNOWN_FAMILY
            with session_scope(self.factory) as session:
                label(session, keys)
                members = family_bests(session, family=family, target_key=spec.target_key,
                                       exclude_workload_id=task.spec.workload_id, flops=task.spec.flops,
                                       per_workload=limit)
            mods = {m.workload_id: workload_from_json(m.mod_json) for m in members}
            # Round-robin over members, best first: each member's best before any member's second.
            depth = max((len(m.traces) for m in members), default=0)
            sources = [(mods[m.workload_id], m.traces[i]) for i in range(depth) for m in members if i < len(m.traces)]
            added = task.search.add_transfers(sources, limit)
            learned = 0
            siblings = {t.spec.workload_id for t in self.tasks}  # already feed the job's shared cost model
            for m in members:  # each member once per job: the cost model is shared by its tasks
                if m.workload_id in self.learned_from or m.workload_id in siblings:
                    continue
                self.learned_from.add(m.workload_id)
                with session_scope(self.factory) as session:
                    measured = member_measurements(session, workload_id=m.workload_id, target_key=spec.target_key)
                learned += task.search.learn_from(mods[m.workload_id], measured)
        except Exception:  # noqa: BLE001
            log.exception("job %d task %s: carrying schedules over from its family failed; searching cold",
                          spec.id, task.spec.name)
            return
        if sources:
            log.info("job %d task %s: %d schedules carried over from %d workloads of its family (%d tried); "
                     "cost model trained on %d of their measurements",
                     spec.id, task.spec.name, added, len(members), len(sources), learned)

    def _propose_batch(self, spec: JobSpec, task: _Task, number: int, remaining: int) -> _Round:
        """One batch of ``task`` into the queue (empty when its search had nothing new this time)."""
        rnd = _Round(number=number)
        if task.transfer_pending:
            task.transfer_pending = False
            self._transfer(spec, task)
        unstarted = self.scheduler.unstarted()
        # While some tasks have had no batch yet, leave them an equal share of what is left,
        # so a budget smaller than one batch per task still reaches every task.
        share = -(-remaining // len(unstarted)) if task.spec.id in unstarted else remaining
        proposals = task.search.propose(max(1, min(spec.trials_per_round, share, remaining)))
        if not proposals:
            if task.search.exhausted:
                self.scheduler.tasks[task.spec.id].exhausted = True
            return rnd
        with session_scope(self.factory) as session:
            # Enqueue only while the job is still ours: a cancel that lands first wins.
            if not job_heartbeat(session, job_id=spec.id, owner=self.owner):
                self.lost.set()
                raise _Stop("lost")
            ids = enqueue_candidates(
                session,
                task_id=task.spec.id,
                workload_id=task.spec.workload_id,
                target_key=spec.target_key,
                traces=[p.trace_json for p in proposals],
                round=number,
            )
            rnd.inflight.update({cid: (task, p) for cid, p in zip(ids, proposals)})
        self.used += len(rnd.inflight)
        log.info("job %d batch %d: queued %d candidates of %s; %d/%d trials",
                 spec.id, number, len(rnd.inflight), task.spec.name, self.used, spec.trials)
        return rnd

    def _await_and_feed(self, spec: JobSpec, rnd: _Round) -> None:
        """Wait until every candidate of the batch is measured (or withdrawn), then feed searches and scheduler."""
        waiting = dict(rnd.inflight)
        results: dict[int, Outcome] = {}
        while waiting:
            self._check()
            with session_scope(self.factory) as session:
                rows = job_candidates(session, job_id=spec.id, candidate_ids=list(waiting))
            for row in rows:
                if row.measured:
                    results[row.candidate_id] = _outcome(row)
                    del waiting[row.candidate_id]
                elif row.state == CANCELLED:  # withdrawn without a measurement: it does not count
                    del waiting[row.candidate_id]
                    self.used -= 1
            if waiting:
                self.stop.wait(self.settings.tuner_poll_s)
        per_task: dict[int, tuple[_Task, list[Proposal], list[Outcome]]] = {}
        latencies: dict[int, list[float | None]] = defaultdict(list)
        for cid, outcome in results.items():
            task, proposal = rnd.inflight[cid]
            task.done += 1
            task.valid += outcome.valid
            latencies[task.spec.id].append(outcome.mean_secs)
            if proposal is None:
                continue
            entry = per_task.setdefault(task.spec.id, (task, [], []))
            entry[1].append(proposal)
            entry[2].append(outcome)
        for task, proposals, outcomes in per_task.values():
            self._check()
            task.search.observe(proposals, outcomes)
        for key, lat in latencies.items():
            self.scheduler.observe(key, lat)
        for task in self.tasks:
            if task.spec.id in latencies:
                state = self.scheduler.tasks[task.spec.id]
                log.info(
                    "job %d batch %d: task %s %d trials (%d valid), best %s%s; job %d/%d trials",
                    spec.id, rnd.number, task.spec.name, task.done, task.valid, _ms(task.search.best_secs),
                    " (stopped improving: stops early)" if state.converged else "", self.used, spec.trials,
                )
        rnd.inflight.clear()
