"""TaskSearch drives MetaSchedule's evolutionary search; SqlDatabase shows it the queue's records.

Real TVM throughout: candidates come from MetaSchedule, are built with
``tvm.tirx.build`` and timed with ``time_evaluator``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import tvm_ffi
from sqlalchemy.orm import Session, sessionmaker

from common.protocol import CandidateResult, ErrorKind, JobStatus, MeasurementOutcome
from common.tvm_json import apply_trace, args_info_json
from db.engine import session_scope
from db.queue import complete, enqueue_candidates, lease_candidates
from factories import add_job, add_task, add_worker, add_workload
from tuner.search import SearchConfig, TaskSearch
from tvm_helpers import CPU_TARGET, matmul_workload

# A smaller population than MetaSchedule's 512 keeps a round to about a second here.
FAST = SearchConfig(population_size=64, init_min_unmeasured=16, genetic_num_iters=2)


def measure(mod: Any, trace_json: str) -> MeasurementOutcome:
    """Build and time one candidate, as a worker would."""
    import numpy as np
    import tvm

    lib = tvm.tirx.build(apply_trace(mod, trace_json).mod, target=tvm.target.Target(CPU_TARGET))
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(np.random.rand(*shape).astype(dtype), dev)
            for _, dtype, shape in json.loads(args_info_json(mod))]
    return MeasurementOutcome(run_secs=list(lib.time_evaluator("main", dev, number=3, repeat=2)(*args).results))


def _key(mod_or_sch: Any) -> int:
    return int(tvm_ffi.structural_hash(getattr(mod_or_sch, "mod", mod_or_sch)))


def test_task_search_proposes_learns_and_never_repeats() -> None:
    mod = matmul_workload(32)
    # num_warmup_samples=0: the XGBoost model is trained after round 1 and ranks round 2.
    search = TaskSearch(mod, CPU_TARGET, max_trials=64, num_trials_per_iter=4, num_threads=1,
                        config=replace(FAST, num_warmup_samples=0), seed=7)
    try:
        first = search.propose(4)
        assert len(first) == 4 and len({_key(p.candidate.sch) for p in first}) == 4
        outcomes = [measure(mod, p.trace_json) for p in first]
        assert all(o.valid for o in outcomes)
        search.observe(first, outcomes)
        assert search.best_secs == min(o.mean_secs for o in outcomes)
        assert search.cost_model.booster is not None  # trained on the four
        assert len(search.database.get_top_k(search.workload, 10)) == 4  # MemoryDatabase got the records

        second = search.propose(3)
        assert 1 <= len(second) <= 3
        assert not {_key(p.candidate.sch) for p in second} & {_key(p.candidate.sch) for p in first}
        # The JSON that goes out replays to the very schedule MetaSchedule proposed.
        for p in second:
            assert _key(apply_trace(mod, p.trace_json)) == _key(p.candidate.sch)
        search.observe(second, [MeasurementOutcome.failed(ErrorKind.build, "RuntimeError: build failed")] * len(second))  # failures are data
        assert search.observed == 4 + len(second)
    finally:
        search.close()
        search.close()  # idempotent


class _CountingStrategy:
    """The real strategy, counting its search rounds."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.rounds = inner, 0

    def generate_measure_candidates(self) -> Any:
        self.rounds += 1
        return self.inner.generate_measure_candidates()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_rounds_surplus_is_proposed_next_without_another_round() -> None:
    mod = matmul_workload(32)
    search = TaskSearch(mod, CPU_TARGET, max_trials=64, num_trials_per_iter=8, num_threads=1, config=FAST, seed=3)
    search.strategy = counting = _CountingStrategy(search.strategy)
    try:
        first = search.propose(2)  # a small first batch from a round of eight
        rest = search.propose(6)
        assert counting.rounds == 1
        assert len(first) == 2 and 1 <= len(rest) <= 6
        keys = [_key(p.candidate.sch) for p in first + rest]
        assert len(set(keys)) == len(keys)
        more = search.propose(4)  # the backlog is spent: a new round, nothing proposed twice
        assert counting.rounds == 2
        assert not {_key(p.candidate.sch) for p in more} & set(keys)
    finally:
        search.close()


def _rows(factory: sessionmaker[Session], mod: Any) -> tuple[int, int, str]:
    """A job with one task on ``mod``: (task id, workload id, target key)."""
    with session_scope(factory) as s:
        job = add_job(s, target=CPU_TARGET, status=JobStatus.running)
        task = add_task(s, job=job, workload=add_workload(s, mod=mod), name="matmul32")
        return task.id, task.workload_id, job.target_key


def test_sql_database_is_the_queue_seen_by_metaschedule(session_factory: sessionmaker[Session]) -> None:
    """Records come from measurements ⋈ candidates; a new search warmed from them never repeats them."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from db.ms_database import SqlDatabase

    mod = matmul_workload(32)
    task_id, workload_id, key = _rows(session_factory, mod)
    producer = TaskSearch(mod, CPU_TARGET, max_trials=8, num_trials_per_iter=4, num_threads=1, config=FAST)
    traces = [p.trace_json for p in producer.propose(4)]
    producer.close()
    assert len(traces) == 4

    # The queue: enqueue, lease, measure for real (one reported as a failure), complete.
    with session_scope(session_factory) as s:
        worker = add_worker(s, target_key=key, target_json=json.dumps(CPU_TARGET))
        ids = enqueue_candidates(s, task_id=task_id, workload_id=workload_id, target_key=key, traces=traces, round=1)
        lease, _ = lease_candidates(s, worker_id=worker.id, target_key=key, max_count=8, ttl_s=60)
        lease_id, worker_id = lease.id, worker.id
    outcomes = [measure(mod, t) for t in traces[:3]] + [MeasurementOutcome.failed(ErrorKind.wrong_output, "wrong output")]
    with session_scope(session_factory) as s:
        complete(s, lease_id=lease_id, worker_id=worker_id, results=[
            CandidateResult(candidate_id=cid, **o.model_dump()) for cid, o in zip(ids, outcomes)])

    db = SqlDatabase(session_factory, target=CPU_TARGET, target_key=key)
    assert db.has_workload(mod) and len(db) == 4
    other = matmul_workload(16)
    assert not db.has_workload(other)
    db.commit_workload(other)  # a new workload becomes a row
    assert db.has_workload(other)
    wl = db.commit_workload(mod)
    top = db.get_top_k(wl, 10)
    means = sorted(o.mean_secs for o in outcomes[:3])
    # Fastest first, errors left out (TVM keeps run_secs as float32).
    assert [sum(float(x) for x in r.run_secs) / len(r.run_secs) for r in top] == pytest.approx(means, rel=1e-5)
    assert [len(db.get_top_k(wl, k)) for k in (0, 1, 2)] == [0, 1, 2]
    best = min(range(3), key=lambda i: outcomes[i].mean_secs)
    sch = tvm.s_tir.Schedule(mod)
    top[0].trace.apply_to_schedule(sch, remove_postproc=False)
    assert _key(sch) == _key(apply_trace(mod, traces[best]))
    records = db.get_all_tuning_records()
    assert len(records) == 4 and sum(r.run_secs is None for r in records) == 1
    with pytest.raises(TypeError, match="tunehub.metaschedule.Database"):  # a read-only view of the reports
        db.commit_tuning_record(top[0])
    assert len(db) == 4 and db.read_only
    # TVM's own query path (used by compile_tir / ApplyDatabase) works over it.
    assert ms.tir_integration.compile_tir(db, mod, tvm.target.Target(CPU_TARGET)) is not None

    # A new search over the same rows: warmed with them, it proposes only new schedules.
    search = TaskSearch(mod, CPU_TARGET, max_trials=16, num_trials_per_iter=6, database=db, num_threads=1, config=FAST)
    try:
        warmed = search.warm_start(traces, outcomes)
        assert len(warmed) == 4 and search.best_secs == means[0]
        fresh = search.propose(6)
        assert fresh
        stored = {_key(apply_trace(mod, t)) for t in traces}
        assert not {_key(p.candidate.sch) for p in fresh} & stored
    finally:
        search.close()
