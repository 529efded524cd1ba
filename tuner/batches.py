"""The batch loop of a job: ``BatchLoop``.

The task scheduler (``tuner.scheduler``) picks the task whose next batch should
cut Σ weight × latency most, and its size (a small first batch, then
``trials_per_round``); that task's search proposes that many candidates (never
more than the budget left), which go into the queue in one transaction. Search is pipelined with measurement: up to
``Settings.tuner_pipeline_depth`` batches are queued at once, so the next batch
is generated while workers measure the current one, and each measured batch
goes back to its task's search (cost model, strategy) and to the scheduler.

The budget is ``job.trials`` measurements across tasks (errors count); a
candidate withdrawn unmeasured gives its trial back. A job with a time budget
(``tuner.budget``) also ends when it is spent: checked before every batch and
while awaiting one, the job's unmeasured candidates are then withdrawn, so it
ends within the budget plus the batch being measured. The loop ends when a
budget is spent, every task stopped, or every space is exhausted, and says
why (``JobEndReason``). After each batch queued or measured, the scheduler's
view (each task's share of the model's time and why) is written to the job.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque

from sqlalchemy.orm import Session, sessionmaker

from common.protocol import CandidateState, JobEndReason, MeasurementOutcome
from common.settings import Settings
from db.engine import session_scope
from db.job_claims import CandidateOutcome, JobSpec, job_candidates
from db.job_schedule import TaskChoice, record_end_reason, record_schedule
from db.metrics_queries import record_round
from db.queue import cancel_candidates, enqueue_candidates
from tuner.budget import TimeBudget
from tuner.errors import TVM_ERRORS
from tuner.job_state import Batch, TunedTask, fmt_ms, outcome_of
from tuner.lifecycle import JobLifecycle
from tuner.scheduler import GradientScheduler
from tuner.search import Proposal, SearchConfig
from tuner.transfer import carry_family_over
from tuner.warm_start import seed_task

log = logging.getLogger(__name__)


class BatchLoop:
    """Proposes, queues, awaits and feeds back batches of one job's tasks until the job is done."""

    def __init__(self, spec: JobSpec, *, life: JobLifecycle, factory: sessionmaker[Session], settings: Settings,
                 config: SearchConfig, scheduler: GradientScheduler, budget: TimeBudget) -> None:
        self.spec = spec
        self.budget = budget
        self.life = life
        self.factory = factory
        self.settings = settings
        self.config = config
        self.scheduler = scheduler
        self.tasks: list[TunedTask] = []
        self.used = 0  # candidates of this job that count against the budget (measured or awaited)
        self.learned_from: set[int] = set()  # family members whose measurements the cost model has had
        self._recorded: dict[int, TaskChoice] = {}

    def add(self, task: TunedTask, history: list[CandidateOutcome], resumed: Batch, *,
            estimate: float | None = None) -> None:
        """A task to search, warmed from its ``history`` in this job (its candidates in flight go into ``resumed``).

        ``estimate``: its latency in seconds before any measurement (``tuner.estimates``).
        """
        self.tasks.append(task)
        self.scheduler.add(task.spec.id, task.spec.weight, estimate=estimate)
        self.used += seed_task(self.factory, self.spec, task, history, self.scheduler, resumed)

    def finish(self, reason: JobEndReason) -> None:
        """Record the scheduler's last view and why the job stops (before the lifecycle settles it)."""
        self.record()
        with session_scope(self.factory) as session:
            record_end_reason(session, job_id=self.spec.id, owner=self.life.owner, reason=reason)

    def record(self) -> None:
        """Write each task's share of the model's time and why, where they changed, and the model's estimate."""
        shares = self.scheduler.shares()
        choices = {k: TaskChoice(round(shares[k], 4), t.why) for k, t in self.scheduler.tasks.items()}
        changed = {k: c for k, c in choices.items() if self._recorded.get(k) != c}
        if not changed:
            return
        with session_scope(self.factory) as session:
            if record_schedule(session, job_id=self.spec.id, owner=self.life.owner,
                               estimated_latency_s=self.scheduler.model_latency(), tasks=changed):
                self._recorded.update(changed)

    def close(self) -> None:
        """End every task's search; a TVM error here is logged, not raised (the job's outcome stands)."""
        for task in self.tasks:
            try:
                task.search.close()
            except TVM_ERRORS:
                log.debug("closing the search of task %d failed", task.spec.id, exc_info=True)

    def run(self, resumed: Batch) -> JobEndReason:
        """Until a budget is spent or no task can go on; ``resumed``: candidates in flight before a restart."""
        spec = self.spec
        by_id = {t.spec.id: t for t in self.tasks}
        queued: deque[Batch] = deque([resumed] if resumed.inflight else [])
        number = resumed.number
        while True:
            self.life.check()
            if self.budget.spent():
                return self._stop_at_time_budget()
            remaining = spec.trials - self.used
            if remaining > 0 and len(queued) < self.settings.tuner_pipeline_depth:
                key = self.scheduler.next()
                if key is not None:
                    number += 1
                    batch = self._propose(by_id[key], number, remaining)
                    if batch.inflight:
                        self.scheduler.started(key, len(batch.inflight))
                        queued.append(batch)
                    self.record()
                    continue  # propose again (pipelining), or pick another task if this one had none
            if queued:
                self._await_and_feed(queued.popleft())
                self.record()
                continue
            if remaining <= 0:
                return JobEndReason.trials_spent
            reason = self.scheduler.end_reason()
            log.info("job %d: %s; done after %d of %d trials", spec.id, reason.value, self.used, spec.trials)
            return reason

    def _stop_at_time_budget(self) -> JobEndReason:
        """Withdraw the job's unmeasured candidates: it ends now, with the best measured so far."""
        with session_scope(self.factory) as session:
            self.life.confirm_ours(session)
            withdrawn = cancel_candidates(session, task_ids=[t.spec.id for t in self.tasks])
        log.info("job %d: time budget of %.0f s reached after %d trials; withdrew %d unmeasured candidates",
                 self.spec.id, self.budget.budget_s or 0, self.used - withdrawn, withdrawn)
        return JobEndReason.time_budget

    def _propose(self, task: TunedTask, number: int, remaining: int) -> Batch:
        """One batch of ``task`` into the queue (empty when its search had nothing new this time)."""
        spec = self.spec
        batch = Batch(number=number)
        started = time.monotonic()  # generation time, for GET /metrics
        if task.transfer_pending:
            task.transfer_pending = False
            carry_family_over(self.factory, spec, task, limit=min(self.config.transfer_seeds, spec.trials_per_round),
                              learned_from=self.learned_from, siblings={t.spec.workload_id for t in self.tasks})
        unstarted = self.scheduler.unstarted()
        # While some tasks have had no batch yet, leave them an equal share of what is left,
        # so a budget smaller than one batch per task still reaches every task.
        share = -(-remaining // len(unstarted)) if task.spec.id in unstarted else remaining
        size = self.scheduler.batch_size(task.spec.id)
        proposals = task.search.propose(max(1, min(size, share, remaining)))
        generation_s = time.monotonic() - started
        if not proposals:
            if task.search.exhausted:
                self.scheduler.mark_exhausted(task.spec.id)
            return batch
        with session_scope(self.factory) as session:
            self.life.confirm_ours(session)  # enqueue only while the job is still ours
            ids = enqueue_candidates(
                session,
                task_id=task.spec.id,
                workload_id=task.spec.workload_id,
                target_key=spec.target_key,
                traces=[p.trace_json for p in proposals],
                round=number,
                transferred=[p.transferred for p in proposals],
            )
            record_round(session, job_id=spec.id, task_id=task.spec.id, round=number, candidates=len(ids),
                         generation_s=generation_s)
            batch.inflight.update({cid: (task, p) for cid, p in zip(ids, proposals)})
        self.used += len(batch.inflight)
        log.info("job %d batch %d: queued %d candidates of %s (%s); %d/%d trials",
                 spec.id, number, len(batch.inflight), task.spec.name,
                 self.scheduler.tasks[task.spec.id].why.value, self.used, spec.trials)
        return batch

    def _await(self, batch: Batch) -> dict[int, MeasurementOutcome]:
        """Wait until every candidate of the batch is measured or withdrawn (or the time budget is spent);
        the measurements by candidate id."""
        waiting = dict(batch.inflight)
        results: dict[int, MeasurementOutcome] = {}
        while waiting:
            self.life.check()
            if self.budget.spent():  # the loop withdraws what is still waiting
                return results
            with session_scope(self.factory) as session:
                rows = job_candidates(session, job_id=self.spec.id, candidate_ids=list(waiting))
            for row in rows:
                outcome = outcome_of(row)
                if outcome is not None:
                    results[row.candidate_id] = outcome
                    del waiting[row.candidate_id]
                elif row.state == CandidateState.cancelled:  # withdrawn without a measurement: it does not count
                    del waiting[row.candidate_id]
                    self.used -= 1
            if waiting:
                self.life.stop.wait(self.settings.tuner_poll_s)
        return results

    def _await_and_feed(self, batch: Batch) -> None:
        """Await the batch, then feed its measurements to the searches and the scheduler."""
        results = self._await(batch)
        per_task: dict[int, tuple[TunedTask, list[Proposal], list[MeasurementOutcome]]] = {}
        latencies: dict[int, list[float | None]] = defaultdict(list)
        for cid, outcome in results.items():
            task, proposal = batch.inflight[cid]
            task.done += 1
            task.valid += outcome.valid
            latencies[task.spec.id].append(outcome.mean_secs)
            if proposal is None:
                continue
            entry = per_task.setdefault(task.spec.id, (task, [], []))
            entry[1].append(proposal)
            entry[2].append(outcome)
        for task, proposals, outcomes in per_task.values():
            self.life.check()
            task.search.observe(proposals, outcomes)
        for key, lat in latencies.items():
            self.scheduler.observe(key, lat)
        for task in self.tasks:
            if task.spec.id in latencies:
                log.info(
                    "job %d batch %d: task %s %d trials (%d valid), best %s%s; job %d/%d trials",
                    self.spec.id, batch.number, task.spec.name, task.done, task.valid, fmt_ms(task.search.best_secs),
                    f" (stops: {self.scheduler.tasks[task.spec.id].why.value})"
                    if self.scheduler.converged(task.spec.id) else "",
                    self.used, self.spec.trials,
                )
        batch.inflight.clear()
