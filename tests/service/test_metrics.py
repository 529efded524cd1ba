"""``GET /metrics``: Prometheus text, no token, counts that follow the fleet's state and this process's requests."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from live_server import Live
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update
from test_api_leases import register, seed

from common.targets import canonical_target
from db.engine import db_now
from db.metrics_queries import record_round
from db.models import Lease, Task


def scrape(live: Live) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from an unauthenticated scrape."""
    r = httpx.get(live.base_url + "/metrics", timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    assert live.admin_token not in r.text and "Bearer" not in r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def test_metrics_follow_leases_reports_and_expiry(live: Live) -> None:
    before = scrape(live)
    for status in ("queued", "running", "done", "failed", "cancelled"):
        assert ("tunehub_jobs", (("status", status),)) in before  # every state is there, zero or not
    target, cids, _ = seed(live, 3)
    key = canonical_target(target)[1]
    worker = live.client(live.token("worker"))
    wid = register(worker, target, "metrics")

    seeded = scrape(live)
    assert value(seeded, "tunehub_queue_depth", target_key=key) == 3
    assert value(seeded, "tunehub_jobs", status="queued") == value(before, "tunehub_jobs", status="queued") + 1
    assert value(seeded, "tunehub_workers", state="online") >= 1

    first = worker.post("/leases", json={"worker_id": wid, "max_candidates": 1}).json()
    leased = scrape(live)
    assert value(leased, "tunehub_queue_depth", target_key=key) == 2
    assert value(leased, "tunehub_leases_active") == value(seeded, "tunehub_leases_active") + 1
    assert (value(leased, "tunehub_lease_request_seconds_count")
            == value(seeded, "tunehub_lease_request_seconds_count") + 1)

    with live.session() as s:  # the lease runs out, by the database's clock
        s.execute(update(Lease).where(Lease.id == first["lease_id"]).values(expires_at=db_now(s) - timedelta(seconds=1)))
    second = worker.post("/leases", json={"worker_id": wid}).json()  # sweeps the expired one first
    assert sorted(c["id"] for c in second["candidates"]) == cids
    report = {"worker_id": wid, "results": [
        {"candidate_id": cids[0], "run_secs": [1e-3]},
        {"candidate_id": cids[1], "error": "no answer in 10 s", "error_kind": "timeout"},
    ]}
    r = worker.post(f"/leases/{second['lease_id']}/results", json=report)
    assert r.status_code == 200, r.text

    after = scrape(live)
    assert value(after, "tunehub_leases_expired_total") == value(leased, "tunehub_leases_expired_total") + 1
    assert (value(after, "tunehub_report_request_seconds_count")
            == value(leased, "tunehub_report_request_seconds_count") + 1)
    assert total(after, "tunehub_measurements_total") == total(leased, "tunehub_measurements_total") + 2
    assert (value(after, "tunehub_measurements_total", outcome="timeout")
            == value(leased, "tunehub_measurements_total", outcome="timeout") + 1)
    assert value(after, "tunehub_queue_depth", target_key=key) == 0


def test_tuner_rounds_and_generation_time_come_from_the_database(live: Live) -> None:
    seed(live, 1)
    before = scrape(live)
    with live.session() as s:  # what a tuner process writes per batch it queues (tuner.batches)
        job_id, task_id = s.execute(select(Task.job_id, Task.id).order_by(Task.id.desc()).limit(1)).one()
        record_round(s, job_id=job_id, task_id=task_id, round=1, candidates=1, generation_s=0.25)
        record_round(s, job_id=job_id, task_id=task_id, round=2, candidates=1, generation_s=0.5)
    after = scrape(live)
    assert value(after, "tunehub_tuner_rounds_total") == value(before, "tunehub_tuner_rounds_total") + 2
    assert value(after, "tunehub_tuner_generation_seconds_count") == value(after, "tunehub_tuner_rounds_total")
    assert value(after, "tunehub_tuner_generation_seconds_sum") == pytest.approx(
        value(before, "tunehub_tuner_generation_seconds_sum") + 0.75)
