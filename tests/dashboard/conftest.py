"""Fixtures for the dashboard tests: a live service, real tuning data in it, headless Chromium.

``seeded`` is a live service (uvicorn on loopback, SQLite) whose rows are
written with ``tests/factories.py`` but whose numbers are real: the candidates
are MetaSchedule's own proposals for two matmul workloads, measured by the
worker's real ``Measurer`` (TVM builds, sandboxed timed runs, correctness
checks), plus two candidates that really fail (a wrong-output layout and a
trace that does not apply). Only the measurements' timestamps are spread out
(15 s apart) so the time curve has a shape.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
for extra in (TESTS_DIR, TESTS_DIR / "service", TESTS_DIR / "workers"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from live_server import Live, running  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """A fresh service on SQLite, no data."""
    with running(f"sqlite:///{tmp_path / 'tunehub.db'}", tmp_path) as svc:
        yield svc


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


def _measure(target: dict[str, Any], items: list[Any]) -> tuple[list[Any], Any]:
    """Real measurements of ``items`` and the measurer's calibration."""
    from workers.measure import Measurer, Timing

    timing = Timing(number=1, repeat=3, min_repeat_ms=0, warmup=1, cache_flush=True)
    measurer = Measurer(target, build_workers=1, timing=timing, calibrate_every_s=3600)
    got: list[Any] = []
    try:
        measurer.start()
        measurer.measure(items, lambda rs: got.extend(rs) or True)
        return got, measurer.calibration
    finally:
        measurer.close()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """Two jobs (one done, one running), two workers and real measurements, behind a live service."""
    import factories
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

    data_dir = tmp_path_factory.mktemp("dashboard")
    with running(f"sqlite:///{data_dir / 'tunehub.db'}", data_dir) as live:
        target_json, key = canonical_target(CPU_TARGET)
        with live.session() as s:
            now = db_now(s)
            mlp, cnn = factories.add_model(s, name="mlp"), factories.add_model(s, name="cnn")
            wl = {n: factories.add_workload(s, mod=mods[n], flops=2.0 * n**3, family="matmul") for n in mods}
            worker = factories.add_worker(s, target_key=key, name="lab-x86", target_json=json_dumps(target_json))
            worker.calibration_json = calibration.model_dump_json() if calibration else None
            idle = factories.add_worker(s, target_key=key, name="idle-box", target_json=json_dumps(target_json))
            done = factories.add_job(s, model=mlp, target=CPU_TARGET, trials=len(items), status=JobStatus.done)
            done.started_at, done.finished_at = now - timedelta(minutes=4), now - timedelta(seconds=30)
            tasks = {64: factories.add_task(s, job=done, workload=wl[64], name="matmul64", weight=2),
                     32: factories.add_task(s, job=done, workload=wl[32], name="matmul32", weight=1)}
            for i, (n, trace) in enumerate(order):
                r = by_id[i + 1]
                m = factories.add_measurement(s, task=tasks[n], worker=worker, trace_json=trace,
                                              run_secs=r.run_secs, error=r.error, flagged=r.flagged)
                m.created_at = done.started_at + timedelta(seconds=15 * (i + 1))
            run = factories.add_job(s, model=cnn, target=CPU_TARGET, trials=8, status=JobStatus.running)
            run.started_at = now - timedelta(seconds=30)
            shared = factories.add_task(s, job=run, workload=wl[64], name="matmul64", weight=3)
            first = by_id[1]
            factories.add_measurement(s, task=shared, worker=worker, trace_json=order[0][1],
                                      run_secs=first.run_secs, error=first.error)
            ids = (done.id, run.id, worker.id, idle.id)
        errors = {"wrong_output": 1, "build": 1}  # the transposed layout, the trace that does not apply
        yield Seeded(live, *ids, target_key=key, models={mlp.id: "mlp", cnn.id: "cnn"}, errors=errors)


def json_dumps(value: Any) -> str:
    return json.dumps(value)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium); CI installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
