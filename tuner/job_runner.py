"""Run one job to its end, resumably: ``run_job``.

A job runs in rounds. Each round, every task that still has a search space
proposes up to ``trials_per_round`` candidates (never more than the budget
left); they go into the queue in one transaction, workers measure them, and
once every candidate of the round has a measurement the results go back to
each task's search. Round-robin over tasks, starting one task later each round
so a budget that runs out mid-round does not always favour the first task.

The budget is ``job.trials`` measurements in total across tasks (errors
count). It is counted from the database, so a restart loses nothing and
repeats nothing: on (re)claim, the job's measured candidates count against the
budget and seed each search (``SqlDatabase`` gives the strategy the stored
records; the cost model is warmed with them), and candidates still pending or
leased from before the restart are awaited first and fed in like any round.

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
from collections import defaultdict
from dataclasses import dataclass, field

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
)
from db.queue import CANCELLED, LEASED, PENDING, cancel_candidates, enqueue_candidates
from tunehub.protocol import JobStatus
from tunehub.settings import Settings
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
        config=search_config or SearchConfig(),
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
        self.tasks: list[_Task] = []
        self.used = 0  # candidates of this job that count against the budget (measured or awaited)

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
        with session_scope(self.factory) as session:
            won = finish_job(session, job_id=self.job_id, owner=self.owner, status=JobStatus.done.value)
        if won:
            log.info("job %d done: %d trials; best per task: %s", self.job_id, self.used, best)
        else:
            self._after_lost()

    def _fail(self, error: str) -> None:
        try:
            with session_scope(self.factory) as session:
                if finish_job(session, job_id=self.job_id, owner=self.owner, status=JobStatus.failed.value, error=error):
                    # Its queued work is now waste for the workers; measured results stay.
                    cancel_candidates(session, task_ids=[t.id for t in load_job(session, job_id=self.job_id).tasks])
        except Exception:  # noqa: BLE001
            log.exception("job %d: could not mark it failed (another tuner will reclaim it after the grace period)", self.job_id)

    def _release(self) -> None:
        with session_scope(self.factory) as session:
            released = release_job(session, job_id=self.job_id, owner=self.owner)
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
        from tunehub.tvm_json import workload_from_json

        if not spec.tasks:
            log.info("job %d has no tasks: nothing to tune", spec.id)
            return "done"
        target = json.loads(spec.target_json)
        threads = self.settings.search_threads
        database = SqlDatabase(self.factory, target=target, target_key=spec.target_key)
        cost_model = make_cost_model(num_tuning_cores=threads, num_warmup_samples=self.config.num_warmup_samples)
        with session_scope(self.factory) as session:
            existing = job_candidates(session, job_id=spec.id)
        by_task: dict[int, list[CandidateOutcome]] = defaultdict(list)
        for row in existing:
            by_task[row.task_id].append(row)

        resumed = _Round(number=max((row.round for row in existing), default=0))
        for task_spec in spec.tasks:
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
            self._seed(spec, task, by_task.get(task_spec.id, []), resumed)
        if existing:
            log.info(
                "job %d resumed: %d trials measured, %d in flight, %d tasks",
                spec.id, self.used - len(resumed.inflight), len(resumed.inflight), len(self.tasks),
            )
        else:
            log.info("job %d started: %d tasks, %d trials, %d per round", spec.id, len(self.tasks), spec.trials, spec.trials_per_round)

        rnd = resumed
        while True:
            if rnd.inflight:
                self._await_and_feed(spec, rnd)
            remaining = spec.trials - self.used
            if remaining <= 0:
                return "done"
            if all(t.search.exhausted for t in self.tasks):
                log.info("job %d: every task's search space is exhausted after %d trials", spec.id, self.used)
                return "done"
            rnd = self._propose_round(spec, rnd.number + 1, remaining)

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
        waiting = [r for r in rows if not r.measured and r.state in (PENDING, LEASED)]
        for row in waiting:
            proposal = task.search.rebuild(row.trace_json)
            if proposal is not None:
                task.search.expect([proposal])
            resumed.inflight[row.candidate_id] = (task, proposal)
        self.used += len(measured) + len(waiting)

    def _propose_round(self, spec: JobSpec, number: int, remaining: int) -> _Round:
        rnd = _Round(number=number)
        active = [t for t in self.tasks if not t.search.exhausted]
        start = (number - 1) % len(active)
        # An equal share of what is left, so a budget smaller than one full round
        # still reaches every task instead of being spent on the first few.
        share = max(1, -(-remaining // len(active)))
        batches: list[tuple[_Task, list[Proposal]]] = []
        for task in active[start:] + active[:start]:
            if remaining <= 0:
                break
            self._check()
            proposals = task.search.propose(min(spec.trials_per_round, share, remaining))
            if proposals:
                batches.append((task, proposals))
                remaining -= len(proposals)
        if not batches:
            return rnd
        with session_scope(self.factory) as session:
            # Enqueue only while the job is still ours: a cancel that lands first wins.
            if not job_heartbeat(session, job_id=spec.id, owner=self.owner):
                self.lost.set()
                raise _Stop("lost")
            for task, proposals in batches:
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
        log.info(
            "job %d round %d: queued %d candidates (%s); %d/%d trials",
            spec.id, number, len(rnd.inflight),
            ", ".join(f"{t.spec.name} {len(p)}" for t, p in batches), self.used, spec.trials,
        )
        return rnd

    def _await_and_feed(self, spec: JobSpec, rnd: _Round) -> None:
        """Wait until every candidate of the round is measured (or withdrawn), then feed the searches."""
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
        for cid, outcome in results.items():
            task, proposal = rnd.inflight[cid]
            task.done += 1
            task.valid += outcome.valid
            if proposal is None:
                continue
            entry = per_task.setdefault(task.spec.id, (task, [], []))
            entry[1].append(proposal)
            entry[2].append(outcome)
        for task, proposals, outcomes in per_task.values():
            self._check()
            task.search.observe(proposals, outcomes)
        touched = sorted({rnd.inflight[cid][0].spec.id for cid in results})
        for task in self.tasks:
            if task.spec.id in touched:
                log.info(
                    "job %d round %d: task %s %d trials (%d valid), best %s; job %d/%d trials",
                    spec.id, rnd.number, task.spec.name, task.done, task.valid, _ms(task.search.best_secs),
                    self.used, spec.trials,
                )
        rnd.inflight.clear()
