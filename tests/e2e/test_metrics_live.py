"""``/metrics`` scraped during a real job (live service, tuner and worker processes): the counters move.

The service logs as JSON (``TUNEHUB_LOG_FORMAT=json``) here, so the same run
shows that every line of its log is a JSON object.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests_support import EXAMPLES, wait_for

pytestmark = pytest.mark.slow


def scrape(server: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(server + "/metrics", timeout=60)  # no token: Prometheus scrapes without one
    assert r.status_code == 200, r.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def total(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def test_metrics_move_during_a_real_job(stack, tmp_path: Path) -> None:
    stack.overrides["TUNEHUB_LOG_FORMAT"] = "json"
    stack.start_service()
    stack.start_worker()
    target = stack.wait_for_workers()[0].target
    idle = scrape(stack.server)
    assert total(idle, "tunehub_measurements_total") == 0
    assert idle[("tunehub_workers", (("state", "online"),))] == 1
    with stack.client() as client:
        model = client.upload_model(EXAMPLES / "mlp.onnx", name="mlp")
        job = client.create_job(model.id, target, trials=8, trials_per_round=4)
        wait_for(lambda: client.job(job.id).trials_done >= 1, timeout_s=600, what="first measurements",
                 on_timeout=stack.logs)
        during = scrape(stack.server)
        assert total(during, "tunehub_measurements_total") >= 1
        assert total(during, "tunehub_lease_request_seconds_count") >= 1
        assert total(during, "tunehub_report_request_seconds_count") >= 1
        assert total(during, "tunehub_tuner_rounds_total") >= 1
        assert total(during, "tunehub_tuner_generation_seconds_count") == total(during, "tunehub_tuner_rounds_total")
        assert total(during, "tunehub_tuner_generation_seconds_sum") > 0
        assert during[("tunehub_jobs", (("status", "running"),))] + during[("tunehub_jobs", (("status", "done"),))] == 1
        job = wait_for(lambda: (j := client.job(job.id)).status.value not in ("queued", "running") and j,
                       timeout_s=900, what=f"job {job.id} to end", on_timeout=stack.logs)
    assert job.status.value == "done", (job.error, stack.logs())
    end = scrape(stack.server)
    assert total(end, "tunehub_measurements_total") >= max(total(during, "tunehub_measurements_total"), 8)
    assert total(end, "tunehub_lease_request_seconds_count") > total(during, "tunehub_lease_request_seconds_count")
    assert total(end, "tunehub_tuner_rounds_total") >= 2
    assert end[("tunehub_jobs", (("status", "done"),))] == 1

    # Every line the service process logged (uvicorn's included) is a JSON object; the tuner child's too.
    log_lines = [line for line in (stack.log_dir / "service.log").read_text().splitlines() if line.strip()]
    assert log_lines, stack.logs()
    entries = [json.loads(line) for line in log_lines]
    assert all({"ts", "level", "logger", "msg"} <= set(e) for e in entries)
    assert any(e["logger"].startswith("uvicorn") for e in entries)
