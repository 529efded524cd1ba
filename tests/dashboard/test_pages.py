"""Every dashboard page in headless Chromium, against a live service holding real measurements.

Signs in through the form, opens each page, waits until its script has drawn
the data (``body[data-loaded]``), and checks that the numbers on the page are
the API's: the job progress and per-task best latencies of ``/api/v1/jobs``,
the calibration of ``/api/v1/workers``, and counts read back from the rows.
Screenshots go to the test's tmp folder (and to ``$TUNEHUB_SCREENSHOTS_DIR``
when set, which is how docs/screenshots/ is made).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from dashboard_seed import Seeded

pytestmark = pytest.mark.slow  # real TVM builds and timed runs seed the data

WAIT_MS = 60_000


def fmt_latency(s: float | None) -> str:
    """dashboard.js's fmt.latency."""
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.3f} ms"
    return f"{s:.3f} s"


def _shot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{name}: the screenshot is blank"
    out = os.environ.get("TUNEHUB_SCREENSHOTS_DIR")
    if out:
        shutil.copy(path, Path(out) / path.name)
    return path


def _open(page: Any, url: str) -> None:
    """Go to ``url`` and wait until the page has drawn its data (a selector: the CSP forbids eval)."""
    page.goto(url)
    page.wait_for_selector("body[data-loaded]", state="attached", timeout=WAIT_MS)


def _cell(page: Any, table: str, row_id: int, field: str) -> Any:
    return page.locator(f'#{table} tr[data-id="{row_id}"] td[data-field="{field}"]')


def _value(page: Any, table: str, row_id: int, field: str) -> str:
    return _cell(page, table, row_id, field).get_attribute("data-value")


def test_every_page_shows_the_api_numbers(seeded: Seeded, browser: Any, tmp_path: Path) -> None:
    live = seeded.live
    base = live.base_url
    api_jobs = {j["id"]: j for j in live.admin.get("/jobs").json()}
    api_workers = {w["id"]: w for w in live.admin.get("/workers").json()}
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    outside: list[str] = []
    page.on("request", lambda r: r.url.startswith(base) or outside.append(r.url))

    # Not signed in: the page sends us to the form; a wrong token is refused there.
    page.goto(f"{base}/dashboard/jobs/{seeded.done_job}")
    assert page.url.startswith(f"{base}/dashboard/login?next=")
    _shot(page, tmp_path, "login")
    page.fill("#token", "not-a-token")
    page.click("#sign-in")
    assert "unknown or revoked token" in page.inner_text("#login-error")
    page.fill("#token", live.admin_token)
    page.click("#sign-in")
    page.wait_for_url(f"{base}/dashboard/jobs/{seeded.done_job}")
    cookie = next(c for c in context.cookies() if c["name"] == "tunehub_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]  # plain http here

    # Jobs: progress, status and the estimated model latency of every job.
    _open(page, f"{base}/dashboard/jobs")
    for job_id, job in api_jobs.items():
        assert _value(page, "jobs", job_id, "trials_done") == str(job["trials_done"])
        assert _value(page, "jobs", job_id, "status") == job["status"]
        assert _cell(page, "jobs", job_id, "trials_done").inner_text() == f"{job['trials_done']} / {job['trials']}"
    done = api_jobs[seeded.done_job]
    est = sum(t["weight"] * t["best_latency_s"] for t in done["tasks"])
    assert float(_value(page, "jobs", seeded.done_job, "est_total_s")) == pytest.approx(est, rel=1e-12)
    assert _cell(page, "jobs", seeded.done_job, "est_total_s").inner_text() == fmt_latency(est)
    running = api_jobs[seeded.running_job]
    assert running["status"] == "running" and float(_value(page, "jobs", seeded.running_job, "eta_s")) > 0
    _shot(page, tmp_path, "jobs")
    # Live: a new result shows up without a reload.
    seeded.add_running_trial()
    page.wait_for_selector(f'#jobs tr[data-id="{seeded.running_job}"] td[data-field="trials_done"]'
                           f'[data-value="{running["trials_done"] + 1}"]', timeout=WAIT_MS)
    running = live.admin.get(f"/jobs/{seeded.running_job}").json()
    assert _cell(page, "jobs", seeded.running_job, "trials_done").inner_text() == f"{running['trials_done']} / 8"

    # One job: per-task numbers, both plots drawn, the trial table and its filter.
    _open(page, f"{base}/dashboard/jobs/{seeded.done_job}")
    for task in done["tasks"]:
        assert float(_value(page, "tasks", task["id"], "best_latency_s")) == task["best_latency_s"]
        assert _cell(page, "tasks", task["id"], "best_latency_s").inner_text() == fmt_latency(task["best_latency_s"])
        assert _value(page, "tasks", task["id"], "trials_done") == str(task["trials_done"])
        assert _value(page, "tasks", task["id"], "trials_valid") == str(task["trials_valid"])
    assert page.locator("#plot-trials canvas").count() == 1 and page.locator("#plot-time canvas").count() == 1
    assert page.locator("#trials tbody tr").count() == done["trials_done"]
    page.select_option("#trial-outcome", "error")
    errors = done["trials_done"] - sum(t["trials_valid"] for t in done["tasks"])
    assert errors == sum(seeded.errors.values())
    assert page.locator("#trials tbody tr").count() == errors
    kinds = sorted(c.get_attribute("data-value") for c in page.locator('#trials td[data-field="error_kind"]').all())
    assert kinds == sorted(seeded.errors)
    page.select_option("#trial-outcome", "")
    _shot(page, tmp_path, "job")

    # Workers: what each measured, its errors by kind, the calibration the API reports.
    _open(page, f"{base}/dashboard/workers")
    measured = done["trials_done"] + running["trials_done"]
    assert _value(page, "workers", seeded.worker, "measurements") == str(measured)
    assert _value(page, "workers", seeded.idle_worker, "measurements") == "0"
    assert json.loads(_value(page, "workers", seeded.worker, "errors")) == seeded.errors
    rate = float(_value(page, "workers", seeded.worker, "error_rate"))
    assert rate == pytest.approx(errors / measured)
    for worker_id, worker in api_workers.items():
        calibration = worker["calibration"]["status"] if worker["calibration"] else ""
        assert _value(page, "workers", worker_id, "calibration") == calibration
    _shot(page, tmp_path, "workers")

    # Workloads of the target: the best config is the fastest valid measurement of any job.
    _open(page, f"{base}/dashboard/workloads?target={seeded.target_key}")
    best_by_hash: dict[str, float] = {}
    for job in api_jobs.values():
        for t in job["tasks"]:
            if t["best_latency_s"] is not None:
                h = t["workload_hash"]
                best_by_hash[h] = min(best_by_hash.get(h, t["best_latency_s"]), t["best_latency_s"])
    rows = page.locator("#workloads tbody tr").all()
    assert len(rows) == len(best_by_hash) == 2
    for row in rows:
        h = row.locator('td[data-field="hash"]').get_attribute("data-value")
        assert float(row.locator('td[data-field="best_latency_s"]').get_attribute("data-value")) == best_by_hash[h]
    users = {r.locator('td[data-field="models"]').inner_text() for r in rows}
    assert users == {"cnn, mlp", "mlp"}  # the 64x64 matmul is in both models
    _shot(page, tmp_path, "workloads")

    # Logout clears the cookie: the pages send us back to the form.
    page.click("header .logout button")
    page.wait_for_url(f"{base}/dashboard/login")
    assert not [c for c in context.cookies() if c["name"] == "tunehub_token"]
    page.goto(f"{base}/dashboard/workers")
    assert page.url.startswith(f"{base}/dashboard/login?next=")
    assert outside == [], f"the dashboard fetched from elsewhere: {outside}"
    context.close()
