"""What a job starts from: the database's history of its workloads (``JobHistory``) and ``seed_task``.

A workload the target key already has a best for (a finished job measured it)
is answered from it at once, with no trials, unless the job asks to ``retune``
or already started on it. Every other task's search is warmed from the database
so a restart loses nothing and repeats nothing: its own measured candidates
(they count against the budget), the fleet's best measurements of its workload
(other jobs), and candidates still pending or leased from before the restart,
which are awaited first like any batch.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from common.protocol import CandidateState
from db.engine import session_scope
from db.job_claims import CandidateOutcome, JobSpec, TaskSpec, fleet_best, job_candidates, tuned_workloads
from tuner.configs import current_tvm_version
from tuner.job_state import Batch, TunedTask, outcome_of
from tuner.scheduler import GradientScheduler

log = logging.getLogger(__name__)

FLEET_WARM_RECORDS = 64
"""How many of the fleet's best measurements of a workload (other jobs) warm a new search."""

_IN_FLIGHT = (CandidateState.pending, CandidateState.leased)


@dataclass
class JobHistory:
    """The job's own candidates by task, and the stored bests (seconds) of its workloads by workload id."""

    by_task: dict[int, list[CandidateOutcome]] = field(default_factory=lambda: defaultdict(list))
    stored: dict[int, float] = field(default_factory=dict)

    @classmethod
    def load(cls, factory: sessionmaker[Session], spec: JobSpec) -> JobHistory:
        with session_scope(factory) as session:
            existing = job_candidates(session, job_id=spec.id)
            stored = {} if spec.retune else tuned_workloads(
                session, workload_ids=[t.workload_id for t in spec.tasks], target_key=spec.target_key,
                exclude_job_id=spec.id, tvm_version=current_tvm_version())
        history = cls(stored=stored)
        for row in existing:
            history.by_task[row.task_id].append(row)
        return history

    @property
    def resumed(self) -> bool:
        return any(self.by_task.values())

    @property
    def last_round(self) -> int:
        return max((row.round for rows in self.by_task.values() for row in rows), default=0)

    def answer(self, task: TaskSpec) -> float | None:
        """The stored best of a task's workload, unless this job already started on the task."""
        return None if self.by_task.get(task.id) else self.stored.get(task.workload_id)


def seed_task(factory: sessionmaker[Session], spec: JobSpec, task: TunedTask, rows: list[CandidateOutcome],
              scheduler: GradientScheduler, resumed: Batch) -> int:
    """Warm one task's search and the scheduler from the database; returns the trials it already used.

    Candidates still in flight go into ``resumed``. A task with no history at all
    is marked for a family transfer at its first batch (by then its siblings in
    the job may have measurements).
    """
    measured = [(r, o) for r, o in ((r, outcome_of(r)) for r in rows) if o is not None]
    task.done = len(measured)
    task.valid = sum(1 for _, o in measured if o.valid)
    with session_scope(factory) as session:
        fleet = fleet_best(session, workload_id=task.spec.workload_id, target_key=spec.target_key,
                           exclude_task_id=task.spec.id, limit=FLEET_WARM_RECORDS,
                           tvm_version=current_tvm_version())
    known = measured + [(r, o) for r, o in ((r, outcome_of(r)) for r in fleet) if o is not None]
    if known:  # one cost-model update (one XGBoost training) for both
        task.search.warm_start([r.trace_json for r, _ in known], [o for _, o in known])
    if fleet:
        log.info("job %d task %s: warmed with the fleet's %d best measurements", spec.id, task.spec.name, len(fleet))
    elif not rows:
        task.transfer_pending = True
    own = [o.mean_secs for _, o in measured]
    scheduler.seed(task.spec.id, trials=len(measured), best=min((m for m in own if m), default=None))
    waiting = [r for r in rows if outcome_of(r) is None and r.state in _IN_FLIGHT]
    for row in waiting:
        proposal = task.search.rebuild(row.trace_json)
        if proposal is not None:
            task.search.expect([proposal])
        resumed.inflight[row.candidate_id] = (task, proposal)
    return len(measured) + len(waiting)
