"""``GET /metrics``: Prometheus text, no token, counts that follow the fleet's state and this process's requests."""

from __future__ import annotations

from datetime import timedelta

import httpx
from live_server import Live
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from test_api_leases import register, seed

from common.targets import canonical_target
from db.engine import db_now
from db.models import Lease


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
