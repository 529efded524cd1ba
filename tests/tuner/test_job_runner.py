"""Jobs run end to end through the queue, with a real measurer playing the worker.

The measurer leases candidates with ``db.queue.lease_candidates``, replays each
trace on the workload, builds it with ``tvm.tirx.build``, times it with
``time_evaluator`` and reports with ``db.queue.complete`` — what a worker does,
minus HTTP and the sandbox. Real TVM, real SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.engine import session_scope
from db.models import Candidate, Job, Measurement, Task, Workload
from db.queue import cancel_candidates, complete, lease_candidates
from tests_support import wait_for
from common.protocol import CandidateResult
from common.settings import Settings
from common.tvm_json import apply_trace, args_info_json, workload_from_json
from factories import add_job, add_model, add_task, add_worker, add_workload
from tuner.cost_models import CostModelKind
from tuner.job_runner import run_job
from tuner.search import SearchConfig
from tvm_helpers import CPU_TARGET, matmul_workload

# A smaller population than MetaSchedule's 512 keeps a round to about a second here;
# the loop under test is the same.
# The database-trained cost model: the richer path (stored model, refresh at start and end).
FAST = SearchConfig(population_size=64, init_min_unmeasured=16, genetic_num_iters=2, cost_model=CostModelKind.tunehub)


@dataclass(frozen=True)
class JobRows:
    job_id: int
    task_ids: tuple[int, ...]
    target_key: str


def make_job(factory: sessionmaker[Session], *, sizes: tuple[int, ...] = (32,), trials: int = 8,
             per_round: int = 4, retune: bool = False, weights: tuple[int, ...] | None = None) -> JobRows:
    """Model, workload, job and task rows (one matmul task per size), as the service's intake writes them."""
    with session_scope(factory) as s:
        job = add_job(s, model=add_model(s, name="matmul"), target=CPU_TARGET, trials=trials, per_round=per_round,
                      retune=retune)
        tasks = [add_task(s, job=job, workload=add_workload(s, mod=matmul_workload(n), flops=2.0 * n**3),
                          name=f"matmul{n}", weight=weights[i] if weights else 1)
                 for i, n in enumerate(sizes)]
        return JobRows(job.id, tuple(t.id for t in tasks), job.target_key)


class Measurer:
    """Plays the worker: lease, build, time, report; ``limit`` caps how many it measures."""

    def __init__(self, factory: sessionmaker[Session], target_key: str, *, limit: int | None = None) -> None:
        self.factory = factory
        self.target_key = target_key
        self.limit = limit
        self.measured = 0
        self._stop = threading.Event()
        self._mods: dict[int, Any] = {}
        with session_scope(factory) as s:
            self.worker_id = add_worker(s, name="test-measurer", target_key=target_key,
                                        target_json=json.dumps(CPU_TARGET)).id
        self._thread = threading.Thread(target=self._loop, name="test-measurer", daemon=True)

    def __enter__(self) -> Measurer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            room = 8 if self.limit is None else min(8, self.limit - self.measured)
            if room <= 0:
                continue
            with session_scope(self.factory) as s:
                lease, cands = lease_candidates(s, worker_id=self.worker_id, target_key=self.target_key,
                                                max_count=room, ttl_s=60)
                batch = [(c.id, c.workload_id, c.trace_json) for c in cands]
                for wid in {w for _, w, _ in batch} - set(self._mods):
                    self._mods[wid] = workload_from_json(s.get(Workload, wid).mod_json)
            if lease is None:
                continue
            results = [self._measure(cid, self._mods[wid], trace) for cid, wid, trace in batch]
            with session_scope(self.factory) as s:
                complete(s, lease_id=lease.id, worker_id=self.worker_id, results=results)
            self.measured += len(results)

    @staticmethod
    def _measure(cid: int, mod: Any, trace_json: str) -> CandidateResult:
        import numpy as np
        import tvm

        try:
            lib = tvm.tirx.build(apply_trace(mod, trace_json).mod, target=tvm.target.Target(CPU_TARGET))
            dev = tvm.cpu()
            args = [tvm.runtime.tensor(np.random.rand(*shape).astype(dtype), dev)
                    for _, dtype, shape in json.loads(args_info_json(mod))]
            secs = lib.time_evaluator("main", dev, number=3, repeat=2)(*args).results
            return CandidateResult(candidate_id=cid, run_secs=[float(x) for x in secs])
        except Exception as exc:  # noqa: BLE001  (a failed build is a result, as on a worker)
            return CandidateResult(candidate_id=cid, error=str(exc)[:500])


def settings_for(db_url: str) -> Settings:
    return Settings(database_url=db_url, tuner_poll_s=0.1, tuner_heartbeat_s=0.3, tuner_grace_s=3.0,
                    search_threads=1, tuner_max_jobs=2)


def counts(factory: sessionmaker[Session], job_id: int) -> dict[str, Any]:
    """The job's row and its candidates' fate, from the database."""
    with session_scope(factory) as s:
        in_job = Candidate.task_id.in_(select(Task.id).where(Task.job_id == job_id))
        rows = s.execute(select(Candidate.state, func.count()).where(in_job).group_by(Candidate.state)).all()
        measured = s.execute(select(Measurement.candidate_id, Measurement.mean_secs, Candidate.trace_json,
                                    Candidate.task_id)
                             .join(Candidate, Candidate.id == Measurement.candidate_id).where(in_job)).all()
        job = s.get(Job, job_id)
        per_task: dict[int, int] = {}
        for m in measured:
            per_task[m[3]] = per_task.get(m[3], 0) + 1
        return {
            "states": dict(rows),
            "measured": len(measured),
            "per_task": per_task,
            "distinct_candidates": len({m[0] for m in measured}),
            "distinct_traces": len({m[2] for m in measured}),
            "best": min((m[1] for m in measured if m[1] is not None), default=None),
            "status": job.status,
            "error": job.error,
            "owner": job.tuner_owner,
        }


def _claim(factory: sessionmaker[Session], owner: str) -> int | None:
    from db.job_claims import claim_job

    with session_scope(factory) as s:
        return claim_job(s, owner=owner, grace_s=3.0)


def _start(factory: sessionmaker[Session], job_id: int, owner: str, stop: threading.Event,
           settings: Settings) -> threading.Thread:
    t = threading.Thread(target=run_job, args=(job_id,), name=f"test-run-{owner}", daemon=True,
                         kwargs=dict(settings=settings, session_factory=factory, owner=owner, stop=stop,
                                     search_config=FAST))
    t.start()
    return t


def _traces(factory: sessionmaker[Session], job_id: int) -> set[str]:
    with session_scope(factory) as s:
        return set(s.scalars(select(Candidate.trace_json).join(Task, Task.id == Candidate.task_id)
                             .where(Task.job_id == job_id)))


@pytest.mark.slow
def test_daemon_runs_jobs_to_done(db_url: str, session_factory: sessionmaker[Session],
                                  caplog: pytest.LogCaptureFixture) -> None:
    """The daemon claims queued jobs and runs them: exactly ``trials`` measurements, a best latency;
    a later job on a tuned workload is answered from the database with 0 trials, and one that asks
    to retune starts from the first one's records and measures none of them again."""
    from tuner.daemon import TunerDaemon

    caplog.set_level("INFO", logger="tuner")
    # Round 1: 2 + 2; round 2: 2 + the 1 left of the budget.
    rows = make_job(session_factory, sizes=(16, 32), trials=7, per_round=2)
    daemon = TunerDaemon(settings_for(db_url), owner="tuner-1", search_config=FAST)
    runner = threading.Thread(target=daemon.run, name="test-daemon", daemon=True)

    def ended(job_id: int) -> bool:
        return counts(session_factory, job_id)["status"] not in ("queued", "running")

    with Measurer(session_factory, rows.target_key):
        runner.start()
        wait_for(lambda: ended(rows.job_id), timeout_s=120, what="the job to end", poll_s=0.2)
        answered = make_job(session_factory, sizes=(32,), trials=3, per_round=3)
        wait_for(lambda: ended(answered.job_id), timeout_s=120, what="the answered job to end", poll_s=0.2)
        later = make_job(session_factory, sizes=(32,), trials=3, per_round=3, retune=True)
        wait_for(lambda: ended(later.job_id), timeout_s=120, what="the later job to end", poll_s=0.2)
    daemon.stop()
    daemon.stop()  # idempotent
    runner.join(timeout=30)
    assert not runner.is_alive()

    c = counts(session_factory, rows.job_id)
    assert c["status"] == "done", c["error"]
    assert c["measured"] == c["distinct_candidates"] == c["distinct_traces"] == 7
    assert c["states"] == {"done": 7}
    # Each task its first batch, then the scheduler's choice until the budget is spent.
    assert len(c["per_task"]) == 2 and min(c["per_task"].values()) >= 2
    assert c["best"] is not None and 0 < c["best"] < 1.0

    ca = counts(session_factory, answered.job_id)
    assert ca["status"] == "done" and ca["measured"] == 0 and ca["states"] == {}, ca["error"]
    assert any(f"job {answered.job_id} task matmul32: answered from the database's best" in r.getMessage()
               for r in caplog.records)

    c2 = counts(session_factory, later.job_id)
    assert c2["status"] == "done" and c2["measured"] == 3, c2["error"]
    assert not _traces(session_factory, later.job_id) & _traces(session_factory, rows.job_id)
    assert any(f"job {later.job_id} task matmul32: warmed with the fleet's" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_resume_after_stop_measures_nothing_twice(db_url: str, session_factory: sessionmaker[Session]) -> None:
    """Stopped after round 1 with round 2 in the queue; a new owner awaits it and finishes the budget."""
    rows = make_job(session_factory, trials=8, per_round=4)
    settings = settings_for(db_url)
    assert _claim(session_factory, "first") == rows.job_id
    stop = threading.Event()
    with Measurer(session_factory, rows.target_key, limit=4) as measurer:
        first = _start(session_factory, rows.job_id, "first", stop, settings)
        # Round 1 measured and round 2 queued: the moment a restart hurts most.
        wait_for(lambda: measurer.measured >= 4 and sum(counts(session_factory, rows.job_id)["states"].values()) >= 8,
                 timeout_s=90, what="round 2 to be queued", poll_s=0.2)
        stop.set()
        first.join(timeout=30)
        assert not first.is_alive()
    c = counts(session_factory, rows.job_id)
    assert c["status"] == "queued" and c["owner"] is None  # handed back, not left to the grace period
    assert c["measured"] == 4 and c["states"] == {"done": 4, "pending": 4}

    assert _claim(session_factory, "second") == rows.job_id
    with Measurer(session_factory, rows.target_key):
        second = _start(session_factory, rows.job_id, "second", threading.Event(), settings)
        second.join(timeout=90)
        assert not second.is_alive()
    c = counts(session_factory, rows.job_id)
    assert c["status"] == "done", c["error"]
    assert c["states"] == {"done": 8}  # nothing enqueued twice: the 4 in flight were awaited, not replaced
    assert c["measured"] == c["distinct_candidates"] == c["distinct_traces"] == 8
    assert c["owner"] == "second"


def test_cancel_stops_the_runner(db_url: str, session_factory: sessionmaker[Session]) -> None:
    """No worker: batches wait in the queue; the job is cancelled → the runner stops and withdraws them."""
    rows = make_job(session_factory, trials=16, per_round=8)
    assert _claim(session_factory, "t") == rows.job_id
    runner = _start(session_factory, rows.job_id, "t", threading.Event(), settings_for(db_url))
    # Pipelined: batch 2 (a round of 8) is generated and queued while batch 1 (a first batch of 4) waits.
    wait_for(lambda: counts(session_factory, rows.job_id)["states"].get("pending") == 12,
             timeout_s=60, what="two batches in the queue", poll_s=0.2)
    with session_scope(session_factory) as s:  # what the service does on DELETE /jobs/{id}
        s.execute(update(Job).where(Job.id == rows.job_id).values(status="cancelled"))
    runner.join(timeout=20)
    assert not runner.is_alive()
    with session_scope(session_factory) as s:
        cancel_candidates(s, task_ids=list(rows.task_ids))  # idempotent beside the runner's own withdrawal
    c = counts(session_factory, rows.job_id)
    assert c["status"] == "cancelled" and c["states"] == {"cancelled": 12} and c["measured"] == 0


def test_broken_workload_fails_the_job_loudly(db_url: str, session_factory: sessionmaker[Session],
                                              caplog: pytest.LogCaptureFixture) -> None:
    rows = make_job(session_factory)
    with session_scope(session_factory) as s:
        wid = s.get(Task, rows.task_ids[0]).workload_id
        s.execute(update(Workload).where(Workload.id == wid).values(mod_json='{"not": "a module"}'))
    assert _claim(session_factory, "t") == rows.job_id
    run_job(rows.job_id, settings=settings_for(db_url), session_factory=session_factory, owner="t",
            stop=threading.Event(), search_config=FAST)
    c = counts(session_factory, rows.job_id)
    assert c["status"] == "failed" and c["error"]
    assert any(r.levelname == "ERROR" and f"job {rows.job_id} failed" in r.getMessage() for r in caplog.records)


def test_a_job_not_ours_is_left_alone(db_url: str, session_factory: sessionmaker[Session]) -> None:
    rows = make_job(session_factory)
    run_job(rows.job_id, settings=settings_for(db_url), session_factory=session_factory, owner="nobody",
            stop=threading.Event(), search_config=FAST)
    assert counts(session_factory, rows.job_id)["status"] == "queued"


@pytest.mark.slow
def test_a_new_shape_starts_from_its_family(db_url: str, session_factory: sessionmaker[Session],
                                            caplog: pytest.LogCaptureFixture) -> None:
    """After a 32³ matmul was tuned, a job on 48³ (new to the database) measures the 32³ bests,
    adapted to 48³, as its first batch: valid measurements of the new shape."""
    from tuner.transfer import adapt_trace
    from common.tvm_json import trace_to_json

    caplog.set_level("INFO", logger="tuner")
    settings = settings_for(db_url)
    first = make_job(session_factory, sizes=(32,), trials=8, per_round=4)
    with Measurer(session_factory, first.target_key):
        assert _claim(session_factory, "t") == first.job_id
        run_job(first.job_id, settings=settings, session_factory=session_factory, owner="t",
                stop=threading.Event(), search_config=FAST)
        second = make_job(session_factory, sizes=(48,), trials=4, per_round=4)
        assert _claim(session_factory, "t") == second.job_id
        run_job(second.job_id, settings=settings, session_factory=session_factory, owner="t",
                stop=threading.Event(), search_config=FAST)
    c = counts(session_factory, second.job_id)
    assert c["status"] == "done" and c["measured"] == 4, c["error"]
    # ... and the shared cost model learned from all 8 measurements of the 32³ task.
    assert any(f"job {second.job_id} task matmul48: 4 schedules carried over from 1 workloads" in r.getMessage()
               and r.getMessage().endswith("cost model trained on 8 of their measurements") for r in caplog.records)
    # They are the first job's 4 best, adapted (valid ones first: errors never carry over).
    with session_scope(session_factory) as s:
        best_first = s.scalars(
            select(Candidate.trace_json).join(Measurement, Measurement.candidate_id == Candidate.id)
            .where(Candidate.task_id == first.task_ids[0], Measurement.mean_secs.is_not(None))
            .order_by(Measurement.mean_secs, Measurement.id).limit(4)).all()
        valid_second = s.scalar(select(func.count()).select_from(Measurement).join(
            Candidate, Candidate.id == Measurement.candidate_id)
            .where(Candidate.task_id == second.task_ids[0], Measurement.mean_secs.is_not(None)))
    src, dst = matmul_workload(32), matmul_workload(48)
    from tvm.s_tir import meta_schedule as ms
    import tvm

    ctx = ms.TuneContext(mod=dst, target=tvm.target.Target(CPU_TARGET), space_generator="post-order-apply",
                         search_strategy="evolutionary", num_threads=1)
    expected = {trace_to_json(adapt_trace(src, t, dst, list(ctx.space_generator.postprocs)).trace) for t in best_first}
    assert _traces(session_factory, second.job_id) == expected
    assert valid_second == 4


@pytest.mark.slow
def test_a_later_task_starts_from_an_earlier_sibling(db_url: str, session_factory: sessionmaker[Session],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Within one job: first batches go heaviest first, so the 32³ task's first batch is proposed after
    the 48³ task's was measured (pipeline depth 1), and it starts from the 48³ bests."""
    caplog.set_level("INFO", logger="tuner")
    settings = settings_for(db_url).model_copy(update={"tuner_pipeline_depth": 1})
    rows = make_job(session_factory, sizes=(32, 48), trials=8, per_round=4)
    with Measurer(session_factory, rows.target_key):
        assert _claim(session_factory, "t") == rows.job_id
        run_job(rows.job_id, settings=settings, session_factory=session_factory, owner="t",
                stop=threading.Event(), search_config=FAST)
    c = counts(session_factory, rows.job_id)
    assert c["status"] == "done" and c["measured"] == 8, c["error"]
    carried = [r.getMessage() for r in caplog.records if "carried over" in r.getMessage()]
    # The sibling's 4 measured schedules are tried; refitted to 32³, two may become one schedule (which
    # ones the search proposed depends on measured times). Its measurements already reached the job's
    # shared cost model: not fed twice.
    assert len(carried) == 1 and re.fullmatch(
        rf"job {rows.job_id} task matmul32: [1-4] schedules carried over from 1 workloads of its family "
        r"\(4 tried\); cost model trained on 0 of their measurements", carried[0]), carried
