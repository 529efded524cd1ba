"""Many workers at once: requests queue for their turn instead of stalling the service.

Before ``service.limits.ConcurrencyLimit``, 50 workers leasing at once on
SQLite parked every pool thread on the write lock while the request holding it
waited for a thread: nothing moved until the 30 s busy timeout. Here 50
measuring stubs drain a queue through the live server (SQLite and PostgreSQL)
with nothing lost, nothing leased twice.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from live_server import Live
from stub_workers import StubFleet
from tvm_helpers import matmul_workload

from db import jobs, queue, uploads, workloads
from service.limits import ConcurrencyLimit
from common.targets import canonical_target
from common.tvm_json import args_info_json, workload_hash, workload_to_json


class _Workload:
    def __init__(self) -> None:
        mod = matmul_workload(16)
        self.shash, self.mod_json = workload_hash(mod), workload_to_json(mod)
        self.args_info_json, self.flops = args_info_json(mod), 2.0 * 16**3


def test_admission_keeps_at_most_limit_requests_inside() -> None:
    inside = peak = done = 0

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        nonlocal inside, peak, done
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0.005)
        inside -= 1
        done += 1

    limited = ConcurrencyLimit(app, limit=3)

    async def main() -> None:
        await asyncio.gather(*(limited({"type": "http"}, None, None) for _ in range(30)))
        await limited({"type": "lifespan"}, None, None)  # not an HTTP request: no slot taken

    asyncio.run(main())
    assert (peak, done) == (3, 31)


def test_fifty_workers_at_once_drain_the_queue(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fifty workers of one key would re-measure each other's new bests (db.confirmation): this test
    # counts the queue's own candidates, so the service confirms nothing while it runs.
    monkeypatch.setattr(live.settings, "confirm_winners", False)
    target = {"kind": "llvm", "num-cores": 97}  # a key of its own: the module's other queues stay apart
    canonical, key = canonical_target(target)
    wl = _Workload()
    with live.session() as s:
        model, _ = uploads.store_model(s, name="m", content=uuid.uuid4().bytes, input_shapes={})
        wid = workloads.upsert_workloads(s, extracted=[wl])[wl.shash]
        job = jobs.create_job(s, model_id=model.id, target_json=canonical, target_key=key, trials=300,
                                 trials_per_round=300, tasks=[("matmul", 1, wid)])
        task_id = jobs.job_public(s, job_id=job).tasks[0].id
        ids = queue.enqueue_candidates(s, task_id=task_id, workload_id=wid, target_key=key,
                                       traces=["[[],[]]"] * 300, round=0)
    report = StubFleet(servers=[live.base_url], token=live.token("worker"), target=target, workers=50,
                       expect=len(ids), deadline_s=90, http_timeout_s=20).run()
    assert report.failed_workers == [] and sum(report.transient.values()) == 0, (report.failed_workers, report.transient)
    assert sorted(report.leased) == ids and report.double_leased == []
    assert report.accepted == len(ids)
