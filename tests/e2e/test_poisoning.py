"""A dishonest worker cannot change the configs users download when an honest worker of its target exists.

``tunehub serve`` (no tuner) runs as a process; a job of the MLP example is
created over HTTP and its candidates are queued as the tuner would. Two worker
tokens drive the queue over HTTP: an honest worker reports steady times, a
liar reports every candidate 4x faster (fast, but far above the FLOPs floor,
so only confirmation can catch it). The configs zip a user downloads is the
same bytes before the liar reports, while its claims await confirmation, and
after they are refuted; ``GET /workers`` names the liar suspect.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import httpx
import pytest
from factories import SCHEDULE_TRACE
from sqlalchemy import select

from db import queue
from db.engine import make_engine, make_sessionmaker, session_scope
from db.models import Task

pytestmark = pytest.mark.slow

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
TARGET = {"kind": "llvm", "num-cores": 2}
API = "/api/v1"


def _client(stack, token: str) -> httpx.Client:  # type: ignore[no-untyped-def]
    return httpx.Client(base_url=stack.server + API, headers={"Authorization": f"Bearer {token}"}, timeout=120)


class _Worker:
    """A worker over HTTP that reports ``factor`` x the honest time of each task."""

    def __init__(self, stack, admin: httpx.Client, name: str, honest: dict[int, float], factor: float) -> None:  # type: ignore[no-untyped-def]
        token = admin.post("/tokens", json={"name": name, "role": "worker"}).json()["token"]
        self.http = _client(stack, token)
        r = self.http.post("/workers", json={"name": name, "target": TARGET})
        assert r.status_code == 201, r.text
        self.id = r.json()["id"]
        self.honest, self.factor, self.stack = honest, factor, stack

    def drain(self) -> int:
        """Lease and report until nothing waits for this worker; returns how many results it stored."""
        stored = 0
        while True:
            lease = self.http.post("/leases", json={"worker_id": self.id, "max_candidates": 64}).json()
            if not lease["lease_id"]:
                return stored
            task_of = dict(self.stack.sql(
                f"SELECT id, task_id FROM candidates WHERE lease_id = {int(lease['lease_id'])}"))
            results = [{"candidate_id": c["id"], "run_secs": [self.honest[task_of[c["id"]]] * self.factor] * 3}
                       for c in lease["candidates"]]
            r = self.http.post(f"/leases/{lease['lease_id']}/results", json={"worker_id": self.id, "results": results})
            assert r.status_code == 200, r.text
            stored += len(r.json()["accepted"])


def _enqueue(stack, job: dict[str, Any], per_task: int) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(stack.db_url, null_pool=True)
    try:
        with session_scope(make_sessionmaker(engine)) as s:
            for t in s.execute(select(Task.id, Task.workload_id).where(Task.job_id == job["id"])):
                queue.enqueue_candidates(s, task_id=t.id, workload_id=t.workload_id, target_key=job["target_key"],
                                         traces=[SCHEDULE_TRACE] * per_task, round=0)
    finally:
        engine.dispose()


def test_fake_fast_worker_does_not_change_downloaded_configs(stack) -> None:  # type: ignore[no-untyped-def]
    stack.start_service(tuner=False)
    admin = _client(stack, stack.admin)
    user = _client(stack, admin.post("/tokens", json={"name": "alice", "role": "user"}).json()["token"])
    model = user.post("/models", files={"file": ("mlp.onnx", (ROOT / "examples" / "mlp.onnx").read_bytes())}).json()
    job = user.post("/jobs", json={"model_id": model["id"], "target": TARGET, "trials": 16}).json()
    honest_secs = {t["id"]: (i + 1) * 1e-3 for i, t in enumerate(job["tasks"])}
    honest = _Worker(stack, admin, "honest", honest_secs, 1.0)
    liar = _Worker(stack, admin, "liar", honest_secs, 0.25)

    def download() -> tuple[bytes, ...]:
        """The served records (the manifest's trial counts and dates move with every measurement)."""
        r = user.get("/configs", params={"job": job["id"]})
        assert r.status_code == 200, r.text
        zf = zipfile.ZipFile(io.BytesIO(r.content))
        served = {shash: p["candidate_id"] for shash, p in json.loads(zf.read("manifest.json"))["provenance"].items()}
        return zf.read("database_workload.json"), zf.read("database_tuning_record.json"), json.dumps(served).encode()

    _enqueue(stack, job, 2)
    assert honest.drain() == 2 * len(job["tasks"])
    baseline = download()

    _enqueue(stack, job, 2)  # the liar takes these, and the confirmations of the honest results
    assert liar.drain() >= 2 * len(job["tasks"])
    assert download() == baseline  # its claims are pending: not served over settled results

    assert honest.drain() >= len(job["tasks"])  # re-measures the liar's would-be bests
    assert download() == baseline
    workers = {w["name"]: w for w in user.get("/workers").json()}
    assert workers["liar"]["suspect"] and workers["liar"]["suspect_reason"]
    assert not workers["honest"]["suspect"]
    refuted = stack.sql("SELECT count(*) FROM measurements WHERE confirmation = 'rejected'")[0][0]
    assert refuted >= 1
    progress = user.get(f"/jobs/{job['id']}").json()["tasks"]
    assert {t["id"]: t["best_latency_s"] for t in progress} == pytest.approx(honest_secs)  # no refuted time shown

    # The liar, now suspect, keeps reporting: its results are flagged and the download still does not move.
    _enqueue(stack, job, 1)
    liar.drain()
    assert download() == baseline
