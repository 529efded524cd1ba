"""Run one claimed job to its end, resumably: ``run_job``.

The pieces, one module each: ``tuner.lifecycle`` (heartbeat, and how the job
is settled when the run ends), ``tuner.warm_start`` (what the database already
knows: answers for tuned workloads, a resumed job's measurements, the fleet's
bests), ``tuner.transfer`` (a new workload starts from its family),
``tuner.cost_models`` (which cost model the tasks share), ``tuner.scheduler``
(which task gets the next batch; ``tuner.estimates`` guesses a task's latency
before it is measured), ``tuner.budget`` (the wall-clock budget) and
``tuner.batches`` (the scheduled, pipelined batch loop). This module puts them
together.
"""

from __future__ import annotations

import json
import logging
import threading
from contextlib import closing

from sqlalchemy.orm import Session, sessionmaker

from common.protocol import JobEndReason, JobStatus
from common.settings import Settings
from db.engine import session_scope
from db.job_claims import JobSpec, load_job
from tuner.batches import BatchLoop
from tuner.budget import Clock, TimeBudget, database_clock
from tuner.configs import current_tvm_version
from tuner.cost_models import job_cost_model, refresh_cost_model
from tuner.estimates import estimate_latency
from tuner.job_state import Batch, TunedTask, fmt_ms
from tuner.lifecycle import JobLifecycle, RunEnd
from tuner.scheduler import GradientScheduler
from tuner.search import SearchConfig, TaskSearch
from tuner.warm_start import JobHistory

log = logging.getLogger(__name__)


def run_job(
    job_id: int,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    owner: str,
    stop: threading.Event,
    search_config: SearchConfig | None = None,
    clock: Clock | None = None,
) -> RunEnd | None:
    """Run job ``job_id`` (already claimed by ``owner``) until it is done, lost, cancelled or stopped.

    Ends the job as ``done`` (a budget spent or every task finished; the reason
    is recorded) or ``failed`` (an exception, logged, its repr stored); hands it
    back to the queue when ``stop`` is set; returns None without touching it
    when it is not ``owner``'s. ``clock`` times the job's time budget: the
    database's clock by default.
    """
    config = search_config or SearchConfig.from_settings(settings)
    with session_scope(session_factory) as session:
        spec = load_job(session, job_id=job_id)
    if spec.status != JobStatus.running or spec.tuner_owner != owner:
        log.warning("job %d is %s and owned by %r, not %r: not running it", spec.id, spec.status, spec.tuner_owner, owner)
        return None
    scheduler = GradientScheduler(trials_per_round=spec.trials_per_round, patience=config.patience_trials)
    budget = TimeBudget.load(session_factory, spec.id, clock or database_clock(session_factory))
    life = JobLifecycle(spec, owner=owner, factory=session_factory, settings=settings, stop=stop,
                        trials_used=lambda: loop.used)
    loop = BatchLoop(spec, life=life, factory=session_factory, settings=settings, config=config, scheduler=scheduler,
                     budget=budget)
    answered: dict[str, float] = {}
    with life, closing(loop):
        start = _start(spec, loop, answered, factory=session_factory, settings=settings, config=config)
        reason = loop.run(start) if isinstance(start, Batch) else start
        loop.finish(reason)
    if life.end is RunEnd.done:
        best = {t.spec.name: fmt_ms(t.search.best_secs) for t in loop.tasks}
        best.update({name: fmt_ms(secs) + " (stored)" for name, secs in answered.items()})
        log.info("job %d done (%s): %d trials; best per task: %s", spec.id, reason.value, loop.used, best)
        refresh_cost_model(config.cost_model, spec, factory=session_factory, settings=settings)
    return life.end


def _start(spec: JobSpec, loop: BatchLoop, answered: dict[str, float], *, factory: sessionmaker[Session],
           settings: Settings, config: SearchConfig) -> Batch | JobEndReason:
    """Answer what the database knows, build and warm a search per other task.

    Returns the batch of candidates in flight from before a restart (empty for a
    new job), or why there is nothing to tune.
    """
    from common.tvm_json import workload_from_json
    from db.ms_database import SqlDatabase  # imports TVM

    if not spec.tasks:
        log.info("job %d has no tasks: nothing to tune", spec.id)
        return JobEndReason.no_tasks
    history = JobHistory.load(factory, spec)
    to_tune = []
    for task_spec in spec.tasks:
        stored = history.answer(task_spec)
        if stored is None:
            to_tune.append(task_spec)
            continue
        answered[task_spec.name] = stored
        loop.scheduler.add(task_spec.id, task_spec.weight, answered_best=stored)
        log.info("job %d task %s: answered from the database's best (%s), 0 trials (retune to search again)",
                 spec.id, task_spec.name, fmt_ms(stored))
    if not to_tune:
        log.info("job %d: every task was tuned before; answered from the database", spec.id)
        return JobEndReason.answered

    target = json.loads(spec.target_json)
    database = SqlDatabase(factory, target=target, target_key=spec.target_key, tvm_version=current_tvm_version())
    cost_model = job_cost_model(config.cost_model, spec, factory=factory, settings=settings,
                                num_warmup_samples=config.num_warmup_samples)
    resumed = Batch(number=history.last_round)
    for task_spec in to_tune:
        loop.life.check()
        search = TaskSearch(
            workload_from_json(task_spec.mod_json),
            target,
            max_trials=spec.trials,
            num_trials_per_iter=spec.trials_per_round,
            database=database,
            cost_model=cost_model,
            num_threads=settings.search_threads,
            config=config,
            task_name=task_spec.name,
        )
        estimate = estimate_latency(flops=task_spec.flops, args_info_json=task_spec.args_info_json, target=target)
        loop.add(TunedTask(task_spec, search), history.by_task.get(task_spec.id, []), resumed, estimate=estimate)
    if history.resumed:
        log.info("job %d resumed: %d trials measured, %d in flight, %d tasks",
                 spec.id, loop.used - len(resumed.inflight), len(resumed.inflight), len(loop.tasks))
    else:
        log.info("job %d started: %d tasks (%d answered from the database), %d trials, %d per batch",
                 spec.id, len(spec.tasks), len(answered), spec.trials, spec.trials_per_round)
    return resumed
