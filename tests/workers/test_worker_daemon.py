"""The daemon's lease loop against a scripted service behind httpx's ``MockTransport``.

The real service (over real HTTP) is exercised end to end in tests/e2e; here a
script arranges cheaply what the real one would not: 503s (backoff), a rejected
token, a lost lease, and a stop in the middle of a batch. A refused connection
is a real one (the discard port). Measurements are real (real sandbox, real TVM).
"""

from __future__ import annotations

import json
import logging
import platform
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from common import errors
from tests_support import wait_for
from workers.daemon import WorkerDaemon
from workers.fleet import WorkerFleet
from workers.options import WorkerOptions
from workers.timing import Timing

Reply = tuple[int, dict[str, Any]]


class ScriptedService:
    """Routes POST paths to scripted handlers and records every request; ``transport`` serves them."""

    url = "http://tunehub.test"

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any], str]] = []  # (path, body, auth header)
        self.routes: dict[str, Callable[[str, dict[str, Any]], Reply]] = {}
        self.lock = threading.Lock()
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        path = request.url.path.removeprefix("/api/v1")
        with self.lock:
            self.requests.append((path, body, request.headers.get("Authorization", "")))
        route = path.split("/")[1] + ("/" + path.split("/")[-1] if path.count("/") > 2 else "")
        handler = self.routes.get(route)
        status, reply = handler(path, body) if handler else (404, {"error": "not_found", "detail": path})
        return httpx.Response(status, json=reply)

    def calls(self, route: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for path, body, _ in self.requests if path.endswith(route)]


@pytest.fixture
def service() -> ScriptedService:
    return ScriptedService()


def registered(_: str, body: dict[str, Any]) -> Reply:
    return 200, {"id": 7, "name": body["name"], "target": body["target"], "target_key": "k"}


def no_work(_: str, body: dict[str, Any]) -> Reply:
    return 200, {"lease_id": None, "ttl_s": 30.0, "target": {"kind": "llvm"}}


def one_lease(workload: dict[str, Any], traces: list[Any], lease_id: int = 3) -> Callable[[str, dict[str, Any]], Reply]:
    """The first lease request gets ``traces`` as candidates 100, 101, ...; later ones get nothing."""
    given = threading.Event()

    def lease(path: str, body: dict[str, Any]) -> Reply:
        if given.is_set():
            return no_work(path, body)
        given.set()
        expires = datetime.now(timezone.utc) + timedelta(seconds=30)
        return 200, {
            "lease_id": lease_id,
            "expires_at": expires.isoformat(),
            "ttl_s": 30.0,
            "target": workload["target"],
            "candidates": [
                {"id": 100 + i, "workload_hash": workload["hash"], "trace": t, "args_info": []}
                for i, t in enumerate(traces)
            ],
            "workloads": {workload["hash"]: workload["mod_json"]},
        }

    return lease


def results_ack(_: str, body: dict[str, Any]) -> Reply:
    return 200, {"accepted": [r["candidate_id"] for r in body["results"]], "ignored": []}


def heartbeat_ok(path: str, _: dict[str, Any]) -> Reply:
    return 200, {"lease_id": int(path.split("/")[2]), "expires_at": datetime.now(timezone.utc).isoformat()}


def start(daemon: WorkerDaemon) -> tuple[threading.Thread, list[BaseException]]:
    raised: list[BaseException] = []

    def target() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # noqa: BLE001
            raised.append(exc)

    thread = threading.Thread(target=target, name="daemon-under-test", daemon=True)
    thread.start()
    return thread, raised


def make_daemon(service: ScriptedService | None, workload: dict[str, Any], *, name: str = "w1", **options: Any) -> WorkerDaemon:
    """A daemon on the scripted service (None: a real refused connection) with fast options."""
    timing = {k: options.pop(k) for k in ("number", "repeat", "min_repeat_ms", "warmup", "cache_flush") if k in options}
    timing.setdefault("min_repeat_ms", 0)
    # A disturbed timing waits at most 0.5 s for quiet CPUs (the policy is tested in test_interference.py).
    opts = WorkerOptions(poll_s=0.05, build_workers=1, timing=Timing(**timing), quiet_wait_s=0.5).replace(**options)
    url = service.url if service else "http://127.0.0.1:9"  # discard port: connection refused
    transport = service.transport if service else None
    daemon = WorkerDaemon(url, "tok-123", opts, target=workload["target"], name=name, transport=transport)
    daemon.api.backoff_initial_s = 0.02  # keep the retry test fast
    return daemon


def test_batch_measured_and_reported_after_outages(service: ScriptedService, workload: dict[str, Any]) -> None:
    flaky = iter([(503, {"error": "internal", "detail": "db down"}), (502, {})])
    service.routes["workers"] = lambda p, b: next(flaky, None) or registered(p, b)
    service.routes["leases"] = one_lease(workload, [workload["traces"][0], "[[[\"Nope\",[],[],[]]],[]]"])
    service.routes["leases/results"] = results_ack
    service.routes["leases/heartbeat"] = heartbeat_ok
    daemon = make_daemon(service, workload, repeat=2, heartbeat_s=0.05)
    thread, raised = start(daemon)
    wait_for(lambda: len(service.calls("/results")) == 2, timeout_s=120, what="two reports")
    daemon.stop()
    thread.join(timeout=30)
    assert not thread.is_alive() and not raised

    assert len(service.calls("/workers")) == 3  # two failures retried
    register = service.calls("/workers")[-1]
    assert register["target"] == workload["target"] and register["hardware"]["cores"] >= 1
    assert all(auth == "Bearer tok-123" for _, _, auth in service.requests)
    # The build error is known after the build phase, before the good candidate is timed.
    bad, good = (body["results"][0] for body in service.calls("/results"))
    assert good["candidate_id"] == 100 and len(good["run_secs"]) == 2 and good["error"] is None
    assert bad["candidate_id"] == 101 and bad["run_secs"] is None and bad["error"].startswith("apply trace:")
    assert all(body["worker_id"] == 7 for body in service.calls("/results"))
    first, second = (body["calibration"] for body in service.calls("/results"))
    # The start calibration counted (ok) or, on a busy machine, was too disturbed to count (unknown).
    assert (first["status"], first["samples"]) in (("ok", 1), ("unknown", 0)), first
    assert first["status"] == "unknown" or first["baseline_s"] > 0
    assert second is None  # unchanged since the last report: not sent again
    assert service.calls("/heartbeat")  # beat while measuring (first candidate builds a reference)
    assert not service.calls("/release")  # nothing left to hand back


def test_unreachable_service_is_retried_until_stop(workload: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="common.client")
    daemon = make_daemon(None, workload)  # a real connection, refused
    thread, raised = start(daemon)
    retries = lambda: [r for r in caplog.records if "retrying in" in r.getMessage()]  # noqa: E731
    wait_for(lambda: len(retries()) >= 3, timeout_s=60, poll_s=0.02, what="three retries")
    assert thread.is_alive() and not raised  # still retrying, not crashed
    daemon.stop()
    daemon.stop()  # idempotent
    thread.join(timeout=10)
    assert not thread.is_alive() and not raised


def test_rejected_token_stops_loudly(service: ScriptedService, workload: dict[str, Any]) -> None:
    service.routes["workers"] = lambda p, b: (401, {"error": "unauthorized", "detail": "unknown token"})
    daemon = make_daemon(service, workload)
    thread, raised = start(daemon)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], errors.Unauthorized)
    assert "unknown token" in str(raised[0])


def test_lost_lease_abandons_the_batch(service: ScriptedService, workload: dict[str, Any]) -> None:
    service.routes["workers"] = registered
    service.routes["leases"] = one_lease(workload, list(workload["traces"]))
    service.routes["leases/results"] = results_ack
    service.routes["leases/heartbeat"] = lambda p, b: (409, {"error": "lease_lost", "detail": "lease 3 expired"})
    daemon = make_daemon(service, workload, heartbeat_s=0.01)
    thread, raised = start(daemon)
    wait_for(lambda: bool(service.calls("/heartbeat")) and len(service.calls("/leases")) >= 2,
             timeout_s=120, poll_s=0.02, what="a lost heartbeat and the next lease")
    daemon.stop()
    thread.join(timeout=30)
    assert not raised
    assert len(service.calls("/results")) < len(workload["traces"])
    assert not service.calls("/release")  # not ours to release


def test_stop_mid_batch_releases_the_rest(service: ScriptedService, workload: dict[str, Any]) -> None:
    service.routes["workers"] = registered
    service.routes["leases"] = one_lease(workload, list(workload["traces"]))
    service.routes["leases/results"] = results_ack
    service.routes["leases/heartbeat"] = heartbeat_ok
    service.routes["leases/release"] = lambda p, b: (200, {"released": 3})
    # A minute per timing run: the first candidate is still being timed when we stop.
    daemon = make_daemon(service, workload, min_repeat_ms=60_000, heartbeat_s=0.05)
    daemon.measurer.start()  # started here, so the waits below are spent measuring
    thread, raised = start(daemon)
    # The runner is answering the candidate's run request (check, then the one-minute timing).
    wait_for(lambda: daemon.measurer.runner.in_flight == "run", timeout_s=120, poll_s=0.02, what="the run in flight")
    wait_for(lambda: len(service.calls("/heartbeat")) >= 2, timeout_s=60, poll_s=0.02, what="heartbeats")
    stopped_at = time.monotonic()
    daemon.stop()
    thread.join(timeout=30)
    assert not thread.is_alive() and not raised
    assert time.monotonic() - stopped_at < 10  # the measurement in flight was abandoned
    assert not service.calls("/results")
    assert service.calls("/leases/3/release") == [{"worker_id": 7}]


def test_fleet_runs_a_daemon_per_device_and_a_failure_stops_all(service: ScriptedService, workload: dict[str, Any]) -> None:
    ids = {"lab-cuda0": 1, "lab-cuda1": 2}
    service.routes["workers"] = lambda p, b: (200, {**registered(p, b)[1], "id": ids[b["name"]]})
    service.routes["leases"] = no_work
    daemons = [make_daemon(service, workload, name=n, calibrate_every_s=0, build_workers=0) for n in ids]
    fleet = WorkerFleet(daemons)
    raised: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run_catching(fleet.run, raised), name="fleet-under-test", daemon=True)
    thread.start()
    wait_for(lambda: {b["worker_id"] for b in service.calls("/leases")} == {1, 2},
             timeout_s=120, poll_s=0.02, what="both devices leasing")  # each leases as itself
    assert sorted(b["name"] for b in service.calls("/workers")) == ["lab-cuda0", "lab-cuda1"]
    fleet.stop()
    thread.join(timeout=30)
    assert not thread.is_alive() and not raised

    # One device's daemon fails (its token is refused): the others stop too, and the error surfaces.
    service.routes["workers"] = lambda p, b: (
        (401, {"error": "unauthorized", "detail": "revoked"}) if b["name"] == "lab-cuda1" else registered(p, b)
    )
    daemons = [make_daemon(service, workload, name=n, calibrate_every_s=0, build_workers=0) for n in ids]
    fleet = WorkerFleet(daemons)
    raised.clear()
    thread = threading.Thread(target=lambda: _run_catching(fleet.run, raised), name="fleet-under-test", daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], errors.Unauthorized)
    assert all(d.stopping for d in daemons)


def _run_catching(fn: Callable[[], None], raised: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001
        raised.append(exc)


def test_daemon_refuses_targets_it_cannot_measure() -> None:
    from workers.detect import cuda_target

    with pytest.raises(errors.BadInput, match="no CUDA compiler"):
        WorkerDaemon("http://127.0.0.1:9", "tok", target=cuda_target("9.0"))
    if platform.machine() == "x86_64":
        arm = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 4}
        with pytest.raises(errors.BadInput, match="cannot run code built for llvm aarch64"):
            WorkerDaemon("http://127.0.0.1:9", "tok", target=arm)
