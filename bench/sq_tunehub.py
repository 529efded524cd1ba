"""The tunehub side of search_quality: a service with its tuner and one worker, tuning one workload per job.

A suite workload is a bare PrimFunc, not an ONNX model, so its job is written
through db/ as intake would write it (a model record, the workload, a job with
one task) and the running tuner picks it up; progress is read over the API, the
measurement timeline from the database.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sq_suite import WORKER_TIMING, workload


@dataclass(frozen=True)
class _Workload:
    """What ``upsert_workloads`` reads."""

    shash: str
    mod_json: str
    args_info_json: str
    flops: float | None


class TunehubSide:
    """Tunes suite workloads on a running harness (SQLite under its data dir)."""

    def __init__(self, stack: Any) -> None:
        from db.engine import make_engine, make_sessionmaker

        self.stack = stack
        self.target = stack.wait_for_workers()[0].target
        self.factory = make_sessionmaker(make_engine(stack.db_url))

    def _create_job(self, name: str, trials: int, per_batch: int) -> int:
        from db.catalog import create_job, store_model, upsert_workloads
        from db.engine import session_scope

        from common.targets import canonical_target
        from common.tvm_json import args_info_json, workload_hash, workload_to_json

        mod, flops = workload(name)
        target, key = canonical_target(self.target)
        shash = workload_hash(mod)
        with session_scope(self.factory) as s:
            model, _ = store_model(s, name=name, content=f"search_quality {name} {uuid.uuid4().hex}".encode(),
                                   input_shapes={})
            ids = upsert_workloads(s, extracted=[_Workload(shash, workload_to_json(mod), args_info_json(mod), flops)])
            return create_job(s, model_id=model.id, target_json=target, target_key=key, trials=trials,
                              trials_per_round=per_batch, tasks=[(name, 1, ids[shash])], retune=True)

    def _timeline(self, job_id: int) -> list[tuple[Any, float | None, str]]:
        """(measured at, mean secs or None, trace) of the job's measurements, in the order they were stored."""
        from db.engine import session_scope
        from db.job_claims import job_candidates
        from db.queue import measurements_for

        with session_scope(self.factory) as s:
            traces = {c.candidate_id: c.trace_json for c in job_candidates(s, job_id=job_id)}
            stored = measurements_for(s, candidate_ids=list(traces))
            rows = sorted((m.id, m.created_at, m.mean_secs, traces[cid]) for cid, m in stored.items())
        return [(at, mean, trace) for _, at, mean, trace in rows]

    def tune(self, name: str, trials: int, per_batch: int) -> dict[str, Any]:
        """A job with one task on the workload; waits until it ends. Wall time, timeline, best."""
        job_id = self._create_job(name, trials, per_batch)
        start = time.monotonic()
        with self.stack.client() as client:
            while (job := client.job(job_id)).status.value in ("queued", "running"):
                time.sleep(0.5)
        wall = time.monotonic() - start
        if job.status.value != "done":
            raise RuntimeError(f"tunehub job for {name} ended {job.status.value}: {job.error}")
        timeline, best, best_trace = [], None, None
        for i, (at, mean, trace) in enumerate(self._timeline(job_id), 1):
            if mean is not None and (best is None or mean < best):
                best, best_trace = mean, trace
            timeline.append(((at - job.created_at.replace(tzinfo=at.tzinfo)).total_seconds(), i, best))
        return {"wall_s": wall, "timeline": timeline, "best_secs": best, "best_trace": best_trace,
                "trials": len(timeline)}


@contextmanager
def tunehub_side(workdir: Path, *, pipeline_depth: int, cost_model: str) -> Iterator[TunehubSide]:
    """``tunehub serve`` (API + tuner, SQLite) and one ``tunehub worker`` in ``workdir``, logs there too."""
    from tunehub.harness import running

    overrides = {"TUNEHUB_TUNER_PIPELINE_DEPTH": str(pipeline_depth), "TUNEHUB_COST_MODEL": cost_model,
                 "TUNEHUB_LOG_LEVEL": "INFO", "TUNEHUB_ACCESS_LOG": "false", **WORKER_TIMING}
    with running(workdir, overrides=overrides, name="bench-worker", timeout_s=180) as stack:
        yield TunehubSide(stack)
