"""Real tuning data behind a live service, for the dashboard's browser test.

The rows are written with ``tests/factories.py`` but their numbers are real:
the candidates are MetaSchedule's own proposals for two matmul workloads,
measured by the worker's real ``Measurer`` (TVM builds, sandboxed timed runs,
correctness checks), plus two candidates that really fail (a wrong-output
layout and a trace that does not apply). Only the measurements' timestamps are
spread out (15 s apart) so the time curve has a shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import factories
from live_server import Live, running

from db.models import Task, Worker


@dataclass
class Seeded:
    """The live service and the ids of what was seeded into it."""

    live: Live
    done_job: int
    running_job: int
    worker: int
    idle_worker: int
    target_key: str
    models: dict[int, str]  # model id -> name
    errors: dict[str, int]  # error kind -> count, for the measuring worker
    running_task: int
    repeat: tuple[str, list[float]]  # a measured (trace, run_secs) to report again

    def add_running_trial(self) -> None:
        """One more result for the running job, as a worker's report would store it."""
        with self.live.session() as s:
            trace, run_secs = self.repeat
            factories.add_measurement(s, task=s.get(Task, self.running_task), worker=s.get(Worker, self.worker),
                                      trace_json=trace, run_secs=run_secs)


def _measure(target: dict[str, Any], items: list[Any]) -> tuple[list[Any], Any]:
    """Real measurements of ``items`` and the measurer's calibration."""
    from workers.measure import Measurer
    from workers.options import WorkerOptions
    from workers.timing import Timing

    timing = Timing(number=1, repeat=3, min_repeat_ms=0, warmup=1, cache_flush=True)
    measurer = Measurer(target, WorkerOptions(build_workers=1, timing=timing, calibrate_every_s=3600, quiet_wait_s=0.5))
    got: list[Any] = []
    try:
        measurer.start()
        measurer.measure(items, lambda rs: got.extend(rs) or True)
        return got, measurer.calibration
    finally:
        measurer.close()


@contextmanager
def seeded_service(data_dir: Path) -> Iterator[Seeded]:
    """Two jobs (one done, one running), two workers and real measurements, behind a live service."""
    from tvm_helpers import CPU_TARGET, matmul_workload, real_candidates
    from worker_helpers import transposed_b_trace

    from common.protocol import JobStatus
    from common.targets import canonical_target
    from common.tvm_json import workload_hash, workload_to_json
    from db.engine import db_now
    from workers.measure import Item

    big, small = matmul_workload(64), matmul_workload(32)
    traces = {
        64: list(real_candidates(64, 4)) + [transposed_b_trace(big), '[[["Nope",[],[],[]]],[]]'],
        32: list(real_candidates(32, 3)),
    }
    mods = {64: big, 32: small}
    items, order = [], []
    for n, ts in traces.items():
        for t in ts:
            items.append(Item(len(items) + 1, workload_hash(mods[n]), workload_to_json(mods[n]), t))
            order.append((n, t))
    results, calibration = _measure(CPU_TARGET, items)
    by_id = {r.candidate_id: r for r in results}
    assert sorted(by_id) == [i.candidate_id for i in items], "every candidate was measured once"

    with running(f"sqlite:///{data_dir / 'tunehub.db'}", data_dir) as live:
        target_json, key = canonical_target(CPU_TARGET)
        with live.session() as s:
            now = db_now(s)
            mlp, cnn = factories.add_model(s, name="mlp"), factories.add_model(s, name="cnn")
            wl = {n: factories.add_workload(s, mod=mods[n], flops=2.0 * n**3, family="matmul") for n in mods}
            worker = factories.add_worker(s, target_key=key, name="lab-x86", target_json=json.dumps(target_json))
            worker.calibration_json = calibration.model_dump_json() if calibration else None
            idle = factories.add_worker(s, target_key=key, name="idle-box", target_json=json.dumps(target_json))
            done = factories.add_job(s, model=mlp, target=CPU_TARGET, trials=len(items), status=JobStatus.done)
            done.started_at, done.finished_at = now - timedelta(minutes=4), now - timedelta(seconds=30)
            tasks = {64: factories.add_task(s, job=done, workload=wl[64], name="matmul64", weight=2),
                     32: factories.add_task(s, job=done, workload=wl[32], name="matmul32", weight=1)}
            for i, (n, trace) in enumerate(order):
                r = by_id[i + 1]
                m = factories.add_measurement(s, task=tasks[n], worker=worker, trace_json=trace,
                                              run_secs=r.run_secs, error=r.error, flagged=r.flagged,
                                              error_kind=r.error_kind)
                m.created_at = done.started_at + timedelta(seconds=15 * (i + 1))
            run = factories.add_job(s, model=cnn, target=CPU_TARGET, trials=8, status=JobStatus.running)
            run.started_at = now - timedelta(seconds=30)
            shared = factories.add_task(s, job=run, workload=wl[64], name="matmul64", weight=3)
            first = by_id[1]
            factories.add_measurement(s, task=shared, worker=worker, trace_json=order[0][1],
                                      run_secs=first.run_secs, error=first.error, error_kind=first.error_kind)
            ids = (done.id, run.id, worker.id, idle.id)
            models, running_task = {mlp.id: "mlp", cnn.id: "cnn"}, shared.id
        errors = {"wrong_output": 1, "build": 1}  # the transposed layout, the trace that does not apply
        yield Seeded(live, *ids, target_key=key, models=models, errors=errors, running_task=running_task,
                     repeat=(order[0][1], list(first.run_secs)))

