"""Workers and leases over HTTP: register, lease, heartbeat, report, release, and the errors.

Candidates are enqueued as the tuner would (empty traces on a real matmul
workload); each test uses its own target key, so the module's shared queue
looks empty to it.
"""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import timedelta
from typing import Any

from live_server import Live
from sqlalchemy import func, select, update
from tvm_helpers import matmul_workload

from db import jobs, queue, uploads, workloads
from db.engine import db_now
from db.models import Lease, Measurement
from common.targets import canonical_target
from common.tvm_json import args_info_json, workload_hash, workload_to_json

EMPTY_TRACE = "[[],[]]"
_cores = itertools.count(11)


class _Workload:
    def __init__(self) -> None:
        mod = matmul_workload(16)
        self.shash, self.mod_json = workload_hash(mod), workload_to_json(mod)
        self.args_info_json, self.flops = args_info_json(mod), 2.0 * 16**3


def seed(live: Live, count: int, trace: str = EMPTY_TRACE) -> tuple[dict[str, Any], list[int], str]:
    """A job with ``count`` pending candidates on a target of its own: (target, candidate ids, workload hash).

    The default trace has no schedule instruction, so results never rank as a record
    (TVM's ``IsValid``); pass ``factories.SCHEDULE_TRACE`` for candidates that should."""
    target = {"kind": "llvm", "num-cores": next(_cores)}
    canonical, key = canonical_target(target)
    wl = _Workload()
    with live.session() as s:
        model, _ = uploads.store_model(s, name="m", content=uuid.uuid4().bytes, input_shapes={})
        wid = workloads.upsert_workloads(s, extracted=[wl])[wl.shash]
        job = jobs.create_job(
            s, model_id=model.id, target_json=canonical, target_key=key, trials=count, trials_per_round=count,
            tasks=[("matmul", 1, wid)],
        )
        task_id = jobs.job_public(s, job_id=job).tasks[0].id
        cids = queue.enqueue_candidates(
            s, task_id=task_id, workload_id=wid, target_key=key, traces=[trace] * count, round=0
        )
    return target, cids, wl.shash


def register(client, target: dict[str, Any], name: str = "w") -> int:  # type: ignore[no-untyped-def]
    r = client.post("/workers", json={"name": name, "target": target, "hardware": {"cpu": "test"}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def measurements(live: Live) -> int:
    with live.session() as s:
        return s.execute(select(func.count()).select_from(Measurement)).scalar_one()


def test_lease_heartbeat_results_release_round_trip(live: Live) -> None:
    target, cids, shash = seed(live, 5)
    worker = live.client(live.token("worker"))
    wid = register(worker, target, "round-trip")
    assert register(worker, target, "round-trip") == wid  # a restarted daemon keeps its id
    assert wid in [w["id"] for w in worker.get("/workers").json()]

    r = worker.post("/leases", json={"worker_id": wid, "max_candidates": 3})
    assert r.status_code == 200, r.text
    lease = r.json()
    assert lease["lease_id"] and lease["expires_at"] and lease["ttl_s"] == live.settings.lease_ttl_s
    assert lease["target"] == canonical_target(target)[0]
    assert [c["id"] for c in lease["candidates"]] == cids[:3]
    for c in lease["candidates"]:
        assert c["workload_hash"] == shash and c["trace"] == [[], []]
        assert c["args_info"] == [["TENSOR", "float32", [16, 16]]] * 3
    assert list(lease["workloads"]) == [shash] and json.loads(lease["workloads"][shash])["root_index"]
    lid = lease["lease_id"]

    r = worker.post(f"/leases/{lid}/heartbeat", json={"worker_id": wid})
    assert r.status_code == 200 and r.json()["lease_id"] == lid and r.json()["expires_at"] >= lease["expires_at"]

    report = {
        "worker_id": wid,
        "results": [
            {"candidate_id": cids[0], "run_secs": [1e-3, 1.2e-3]},
            {"candidate_id": cids[1], "error": "wrong output: max abs diff 0.5"},
        ],
    }
    before = measurements(live)
    r = worker.post(f"/leases/{lid}/results", json=report)
    assert r.status_code == 200 and r.json() == {"accepted": cids[:2], "ignored": []}
    r = worker.post(f"/leases/{lid}/results", json=report)  # a retried upload
    assert r.status_code == 200 and r.json() == {"accepted": [], "ignored": cids[:2]}
    assert measurements(live) == before + 2

    r = worker.post(f"/leases/{lid}/release", json={"worker_id": wid})
    assert r.status_code == 200 and r.json() == {"released": 1}
    r = worker.post(f"/leases/{lid}/heartbeat", json={"worker_id": wid})
    assert r.status_code == 409 and r.json()["error"] == "lease_lost"

    r = worker.post("/leases", json={"worker_id": wid, "max_candidates": 8})
    assert [c["id"] for c in r.json()["candidates"]] == cids[2:]  # the released one is back at once
    r = worker.post("/leases", json={"worker_id": wid})
    assert r.status_code == 200
    assert r.json()["lease_id"] is None and r.json()["candidates"] == [] and r.json()["workloads"] == {}


def test_lease_errors_are_json_and_store_nothing(live: Live) -> None:
    target, cids, _ = seed(live, 3)
    tok_a, tok_b = live.token("worker"), live.token("worker")
    a, b = live.client(tok_a), live.client(tok_b)
    wa, wb = register(a, target, "a"), register(b, target, "b")
    lid = a.post("/leases", json={"worker_id": wa, "max_candidates": 2}).json()["lease_id"]
    before = live.counts()

    r = a.post("/leases", json={"worker_id": 987654})
    assert r.status_code == 404 and "worker 987654" in r.json()["detail"]
    r = b.post("/leases", json={"worker_id": wa})
    assert r.status_code == 403 and "another token" in r.json()["detail"]
    r = a.post("/leases", json={"worker_id": wa, "max_candidates": 0})
    assert r.status_code == 422 and "max_candidates" in r.json()["detail"]
    r = a.post("/leases/987654/results", json={"worker_id": wa, "results": [{"candidate_id": cids[0], "run_secs": [1.0]}]})
    assert r.status_code == 404 and r.json() == {"error": "not_found", "detail": "lease 987654 does not exist"}
    r = b.post(f"/leases/{lid}/results", json={"worker_id": wb, "results": [{"candidate_id": cids[0], "run_secs": [1.0]}]})
    assert r.status_code == 409 and r.json()["error"] == "lease_lost"
    for bad in ({}, {"run_secs": [-1.0]}, {"run_secs": []}):
        bad = {"candidate_id": cids[1], **bad}
        report = {"worker_id": wa, "results": [{"candidate_id": cids[0], "run_secs": [1e-3]}, bad]}
        r = a.post(f"/leases/{lid}/results", json=report)
        assert r.status_code == 422 and r.json()["error"] == "bad_input" and str(cids[1]) in r.json()["detail"], r.text
    r = a.post(f"/leases/{lid}/results", json={"worker_id": wa, "results": [{"candidate_id": "x"}]})
    assert r.status_code == 422 and "body.results.0.candidate_id" in r.json()["detail"]
    r = a.post("/workers", json={"name": "bad", "target": {"kind": "quantum"}})
    assert r.status_code == 422 and "quantum" in r.json()["detail"]
    assert live.counts() == before

    # the admin may act for any worker (operations: drain a dead machine's lease)
    assert live.admin.post(f"/leases/{lid}/release", json={"worker_id": wa}).json() == {"released": 2}


def test_an_expired_lease_is_lost_and_its_late_results_ignored(live: Live) -> None:
    target, cids, _ = seed(live, 2)
    a, b = live.client(live.token("worker")), live.client(live.token("worker"))
    wa, wb = register(a, target, "slow"), register(b, target, "fast")
    lid = a.post("/leases", json={"worker_id": wa}).json()["lease_id"]
    with live.session() as s:  # let the lease run out, by the database's clock
        s.execute(update(Lease).where(Lease.id == lid).values(expires_at=db_now(s) - timedelta(seconds=1)))
    r = a.post(f"/leases/{lid}/heartbeat", json={"worker_id": wa})
    assert r.status_code == 409 and r.json()["error"] == "lease_lost"
    second = b.post("/leases", json={"worker_id": wb}).json()
    assert [c["id"] for c in second["candidates"]] == cids
    before = measurements(live)
    late = {"worker_id": wa, "results": [{"candidate_id": c, "run_secs": [1e-3]} for c in cids]}
    assert a.post(f"/leases/{lid}/results", json=late).json() == {"accepted": [], "ignored": cids}
    fresh = {"worker_id": wb, "results": [{"candidate_id": c, "run_secs": [2e-3]} for c in cids]}
    assert b.post(f"/leases/{second['lease_id']}/results", json=fresh).json() == {"accepted": cids, "ignored": []}
    assert measurements(live) == before + 2


def test_lease_size_is_capped_by_the_service(live: Live) -> None:
    cap = live.settings.max_lease_candidates
    target, cids, _ = seed(live, cap + 3)
    worker = live.client(live.token("worker"))
    wid = register(worker, target)
    r = worker.post("/leases", json={"worker_id": wid, "max_candidates": 1024})
    assert [c["id"] for c in r.json()["candidates"]] == cids[:cap]
