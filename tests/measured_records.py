"""Real measured matmul candidates, stored as a finished job's measurements: the cost model's test data.

Candidates come from MetaSchedule, are built and timed here once per session,
and are stored as workers' reports are (``db.queue.complete``).
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
from factories import add_job, add_model, add_task, add_worker, add_workload
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from tvm_helpers import CPU_TARGET, matmul_workload, real_candidates

from common.protocol import CandidateResult, JobStatus
from common.targets import canonical_target
from common.tvm_json import apply_trace, args_info_json
from db.engine import session_scope
from db.models import Model
from db.queue import complete, enqueue_candidates, lease_candidates


@lru_cache(maxsize=8)
def measured(n: int, seed: int, count: int = 16) -> tuple[tuple[str, tuple[float, ...] | None], ...]:
    """(trace, run_secs) of ``count`` real candidates of an n³ matmul, measured once per session."""
    import tvm

    mod = matmul_workload(n)
    out = []
    for trace in real_candidates(n, count, seed):
        lib = tvm.tirx.build(apply_trace(mod, trace).mod, target=tvm.target.Target(CPU_TARGET))
        dev = tvm.cpu()
        args = [tvm.runtime.tensor(np.random.rand(*shape).astype(dtype), dev)
                for _, dtype, shape in json.loads(args_info_json(mod))]
        out.append((trace, tuple(lib.time_evaluator("main", dev, number=5, repeat=3)(*args).results)))
    return tuple(out)


def store_measurements(factory: sessionmaker[Session], n: int, seed: int, model: str | None = None) -> str:
    """A finished job with one task on the n³ matmul and its measurements; returns the target key.

    ``model``: the job's model by name (made once); default a new model per call.
    """
    target, key = canonical_target(CPU_TARGET)
    mod = matmul_workload(n)
    rows = measured(n, seed)
    with session_scope(factory) as s:
        workload = add_workload(s, mod=mod, flops=2.0 * n**3)
        worker = add_worker(s, target_key=key, target_json=json.dumps(target))
        owner = s.scalar(select(Model).where(Model.name == model)) if model else None
        owner = owner or add_model(s, name=model or "m")
        job = add_job(s, model=owner, target=CPU_TARGET, trials=len(rows), per_round=len(rows), status=JobStatus.done)
        task = add_task(s, job=job, workload=workload, name=f"matmul{n}")
        ids = enqueue_candidates(s, task_id=task.id, workload_id=workload.id, target_key=key,
                                 traces=[t for t, _ in rows], round=1)
        lease, _ = lease_candidates(s, worker_id=worker.id, target_key=key, max_count=len(rows), ttl_s=60)
        complete(s, lease_id=lease.id, worker_id=worker.id, results=[
            CandidateResult(candidate_id=cid, run_secs=list(secs) if secs else None, error=None if secs else "x")
            for cid, (_, secs) in zip(ids, rows)])
    return key
