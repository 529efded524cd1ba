"""Jobs over HTTP: creation splits a real ONNX model into tasks; progress, cancel, config download.

One job per backend is created through the API for the whole module (model
intake is the slow part); its measurements come from a worker reporting over
HTTP, its candidates are enqueued as the tuner would.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from factories import SCHEDULE_TRACE
from live_server import MLP_ONNX, Live
from sqlalchemy import select

from db import jobs, queue, tokens
from db.models import Candidate, Job, Task
from common.targets import canonical_target

TARGET = {"kind": "llvm", "num-cores": 2}


@pytest.fixture(scope="module")
def job(live: Live) -> dict[str, Any]:
    user = live.client(live.token("user"))
    r = user.post("/models", files={"file": ("mlp.onnx", MLP_ONNX.read_bytes())})
    assert r.status_code == 201, r.text
    r = user.post("/jobs", json={"model_id": r.json()["id"], "target": TARGET, "trials": 32})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
def measured(live: Live, job: dict[str, Any]) -> dict[int, float]:
    """Each task gets 3 candidates, measured over HTTP: one error, 2 ms and (task index + 1) ms."""
    with live.session() as s:
        tasks = s.execute(select(Task.id, Task.workload_id).where(Task.job_id == job["id"]).order_by(Task.id)).all()
        for t in tasks:
            queue.enqueue_candidates(
                s, task_id=t.id, workload_id=t.workload_id, target_key=job["target_key"], traces=[SCHEDULE_TRACE] * 3, round=0
            )
    worker = live.client(live.token("worker"))
    r = worker.post("/workers", json={"name": "jobs-worker", "target": TARGET, "hardware": {"cores": 2}})
    assert r.status_code == 201, r.text
    wid = r.json()["id"]
    lease = worker.post("/leases", json={"worker_id": wid, "max_candidates": 64}).json()
    assert len(lease["candidates"]) == 3 * len(tasks)
    with live.session() as s:
        leased = select(Candidate.id, Candidate.task_id).where(Candidate.lease_id == lease["lease_id"])
        task_of = dict(s.execute(leased).all())
    results, best = [], {}
    for i, t in enumerate(tasks):
        cids = sorted(c for c, tid in task_of.items() if tid == t.id)
        best[t.id] = min(2e-3, (i + 1) * 1e-3)
        results += [
            {"candidate_id": cids[0], "error": "BuildError: out of registers"},
            {"candidate_id": cids[1], "run_secs": [2e-3, 2e-3]},
            {"candidate_id": cids[2], "run_secs": [(i + 1) * 1e-3]},
        ]
    r = worker.post(f"/leases/{lease['lease_id']}/results", json={"worker_id": wid, "results": results})
    assert r.status_code == 200 and len(r.json()["accepted"]) == len(results), r.text
    return best


def test_job_creation_splits_the_model_into_tasks(live: Live, job: dict[str, Any]) -> None:
    assert job["status"] == "queued" and job["trials"] == 32 and job["trials_done"] == 0
    canonical, key = canonical_target(TARGET)
    assert job["target"] == canonical and job["target_key"] == key
    names = sorted(t["name"] for t in job["tasks"])
    assert names == ["fused_matmul1_add_relu", "fused_matmul2_add1", "fused_matmul_add_relu"]
    for t in job["tasks"]:
        assert t["weight"] == 1 and t["flops"] > 0 and t["workload_hash"].isdigit()
        assert t["trials_done"] == 0 and t["best_latency_s"] is None
    with live.session() as s:
        row = s.get(Job, job["id"])
        assert row is not None and row.trials_per_round == live.settings.num_trials_per_iter

    admin = live.admin
    assert admin.get(f"/jobs/{job['id']}").json()["tasks"] == job["tasks"]
    assert job["id"] in [j["id"] for j in admin.get("/jobs", params={"status": "queued"}).json()]
    assert job["id"] not in [j["id"] for j in admin.get("/jobs", params={"status": "done"}).json()]
    assert [j["id"] for j in admin.get("/jobs", params={"model_id": job["model_id"]}).json()] == [job["id"]]


def test_bad_job_requests_are_clear_and_store_nothing(live: Live, job: dict[str, Any]) -> None:
    user = live.client(live.token("user"))
    before = live.counts()
    mid = job["model_id"]
    r = user.post("/jobs", json={"model_id": mid, "target": {"kind": "no-such-kind"}})
    assert r.status_code == 422 and r.json()["error"] == "bad_input" and "no-such-kind" in r.json()["detail"]
    r = user.post("/jobs", json={"model_id": mid, "target": {"mcpu": "znver3"}})
    assert r.status_code == 422 and "'kind'" in r.json()["detail"]
    r = user.post("/jobs", json={"model_id": 424242, "target": TARGET})
    assert r.status_code == 404 and r.json() == {"error": "not_found", "detail": "model 424242 does not exist"}
    r = user.post("/jobs", json={"model_id": mid, "target": TARGET, "trials": 0})
    assert r.status_code == 422 and "body.trials" in r.json()["detail"]
    for method, path in (("GET", "/jobs/424242"), ("POST", "/jobs/424242/cancel"), ("GET", "/configs?job=424242")):
        r = user.request(method, path)
        assert r.status_code == 404 and r.json()["error"] == "not_found", (path, r.text)
    r = user.get("/configs")
    assert r.status_code == 422 and "?job=ID" in r.json()["detail"]
    r = user.get("/configs", params={"model": mid, "target": '{"kind": "nope"}'})
    assert r.status_code == 422
    assert live.counts() == before


def test_progress_counts_measurements_per_task(live: Live, job: dict[str, Any], measured: dict[int, float]) -> None:
    got = live.client(live.token("user")).get(f"/jobs/{job['id']}").json()
    assert got["trials_done"] == 3 * len(got["tasks"])
    for t in got["tasks"]:
        assert (t["trials_done"], t["trials_valid"]) == (3, 2)
        assert t["best_latency_s"] == pytest.approx(measured[t["id"]])


def test_configs_download_as_a_metaschedule_zip(live: Live, job: dict[str, Any], measured: dict[int, float]) -> None:
    client = live.client(live.token("user"))
    r = client.get("/configs", params={"job": job["id"]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert f'filename="tunehub-configs-job{job["id"]}.zip"' in r.headers["content-disposition"]
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    records = zf.read("database_tuning_record.json").decode().splitlines()
    assert len(records) == len(job["tasks"]) == len(zf.read("database_workload.json").decode().splitlines())
    assert sorted(json.loads(line)[1][1][0] for line in records) == pytest.approx(sorted(measured.values()))

    r = client.get("/configs", params={"model": job["model_id"], "target": json.dumps(TARGET)})
    assert r.status_code == 200
    by_model = zipfile.ZipFile(io.BytesIO(r.content))
    for name in ("database_workload.json", "database_tuning_record.json"):  # the same records either way
        assert by_model.read(name) == zf.read(name)
    # ... and each manifest says what its bundle covers.
    assert json.loads(zf.read("manifest.json"))["bundle"] == {"kind": "job", "job": job["id"]}
    assert json.loads(by_model.read("manifest.json"))["bundle"] == {"kind": "model", "model": job["model_id"]}
    assert f'tunehub-configs-model{job["model_id"]}.zip' in r.headers["content-disposition"]
    r = client.get("/configs", params={"model": job["model_id"], "target": '{"kind": "llvm", "num-cores": 7}'})
    assert r.status_code == 404 and "no jobs" in r.json()["detail"]


def test_cancel_withdraws_candidates_and_only_once(live: Live, job: dict[str, Any]) -> None:
    """A second job of the model on another target: nothing measured (configs 404), then cancelled."""
    canonical, key = canonical_target({"kind": "llvm", "num-cores": 3})
    raw = live.token("user")
    with live.session() as s:
        tasks = s.execute(select(Task.name, Task.weight, Task.workload_id).where(Task.job_id == job["id"])).all()
        other = jobs.create_job(
            s, model_id=job["model_id"], target_json=canonical, target_key=key, trials=8, trials_per_round=4,
            tasks=[tuple(t) for t in tasks], owner_token_id=tokens.live_token(s, raw=raw).id,  # type: ignore[union-attr]
        )
        first_task = s.scalars(select(Task).where(Task.job_id == other).order_by(Task.id)).first()
        assert first_task is not None
        cids = queue.enqueue_candidates(
            s, task_id=first_task.id, workload_id=first_task.workload_id, target_key=key, traces=[SCHEDULE_TRACE] * 2, round=0
        )
    user = live.client(raw)
    r = user.get("/configs", params={"job": other})
    assert r.status_code == 404 and "nothing has been measured" in r.json()["detail"]

    r = user.post(f"/jobs/{other}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    with live.session() as s:
        assert set(s.scalars(select(Candidate.state).where(Candidate.id.in_(cids)))) == {"cancelled"}
    r = user.post(f"/jobs/{other}/cancel")
    assert r.status_code == 409 and r.json()["error"] == "conflict" and "cancelled" in r.json()["detail"]
    assert user.get(f"/jobs/{job['id']}").json()["status"] == "queued"


def test_a_time_budget_alone_or_with_trials(live: Live, job: dict[str, Any]) -> None:
    """``time_budget_s`` alone: the trials are unbounded (the time decides); with trials: both kept;
    out of bounds: 422 naming the field, nothing stored."""
    from common.protocol import MAX_TIME_BUDGET_S, MAX_TRIALS

    user = live.client(live.token("user"))
    mid = job["model_id"]
    r = user.post("/jobs", json={"model_id": mid, "target": TARGET, "time_budget_s": 1800})
    assert r.status_code == 201, r.text
    alone = r.json()
    assert (alone["time_budget_s"], alone["trials"], alone["end_reason"]) == (1800, MAX_TRIALS, None)
    r = user.post("/jobs", json={"model_id": mid, "target": TARGET, "time_budget_s": 60, "trials": 16})
    assert r.status_code == 201 and (r.json()["time_budget_s"], r.json()["trials"]) == (60, 16)
    both = r.json()
    assert user.get(f"/jobs/{alone['id']}").json()["time_budget_s"] == 1800
    assert user.get("/jobs", params={"model_id": mid}).json()[0]["time_budget_s"] == 60
    with live.session() as s:
        assert s.get(Job, alone["id"]).time_budget_s == 1800
    before = live.counts()
    for bad in (0, MAX_TIME_BUDGET_S + 1, "soon"):
        r = user.post("/jobs", json={"model_id": mid, "target": TARGET, "time_budget_s": bad})
        assert r.status_code == 422 and "body.time_budget_s" in r.json()["detail"], r.text
    assert live.counts() == before
    for created in (alone, both):  # leave the module's other jobs alone in the queue
        assert user.post(f"/jobs/{created['id']}/cancel").json()["time_budget_s"] == created["time_budget_s"]


def test_tasks_show_the_schedulers_share_and_why(live: Live, job: dict[str, Any]) -> None:
    """What the tuner records (each task's share of model time and why; the end reason) is in GET /jobs/{id}."""
    from common.protocol import JobEndReason, TaskReason
    from db.job_claims import finish_job
    from db.job_schedule import TaskChoice, record_end_reason, record_schedule

    user = live.client(live.token("user"))
    r = user.post("/jobs", json={"model_id": job["model_id"], "target": {"kind": "llvm", "num-cores": 5},
                                 "trials": 8})
    assert r.status_code == 201, r.text
    created = r.json()
    ids = [t["id"] for t in created["tasks"]]
    assert all(t["share"] is None and t["why"] is None for t in created["tasks"])
    whys = [TaskReason.largest_gain, TaskReason.first_batch, TaskReason.negligible]
    with live.session() as s:
        # As a tuner's claim leaves it (claiming would take the module's older queued job first).
        s.execute(Job.__table__.update().where(Job.id == created["id"]).values(status="running", tuner_owner="t"))
        assert not record_schedule(s, job_id=created["id"], owner="someone else", estimated_latency_s=1.0, tasks={})
        assert record_schedule(s, job_id=created["id"], owner="t", estimated_latency_s=2.5e-3,
                               tasks={tid: TaskChoice(share, why)
                                      for tid, share, why in zip(ids, (0.8, 0.195, 0.005), whys)})
        assert record_end_reason(s, job_id=created["id"], owner="t", reason=JobEndReason.time_budget)
        assert finish_job(s, job_id=created["id"], owner="t", status="done")
    got = user.get(f"/jobs/{created['id']}").json()
    assert got["status"] == "done" and got["end_reason"] == "time budget reached"
    assert got["estimated_latency_s"] == pytest.approx(2.5e-3)
    assert [(t["share"], t["why"]) for t in got["tasks"]] == [
        (0.8, "largest expected gain"), (0.195, "first batch"), (0.005, "under 1 % of model")]
