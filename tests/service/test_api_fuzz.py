"""Schemathesis against the live app: every operation, valid and invalid inputs, no 5xx, no schema violations.

The service runs on loopback (SQLite) with real data behind it: an uploaded
model, a job split by TVM, a registered worker holding a lease with
candidates. Hypothesis draws a few examples per operation and mode (positive:
inputs the schema allows; negative: inputs it forbids), so the run stays under
two minutes; every response must be a documented status, match its declared
schema (``date-time`` included) and never be a server error. (Unknown query
parameters are ignored, as HTTP APIs do, so schemathesis' "negative data
accepted" check is not asked for.) Token revocation
runs last so the fuzzer cannot revoke its own token mid-run.

Needs the ``test`` extra (schemathesis); skipped with a reason where it is absent.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from live_server import MLP_ONNX, Live, running

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra: pip install -e .[test]")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from db import queue  # noqa: E402


EXAMPLES = 12  # per operation and mode
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
TARGET = {"kind": "llvm", "num-cores": 2}


def _seed(live: Live) -> dict[str, Any]:
    """A model, a job, a worker and a live lease with candidates; the fuzzer's token is a fresh admin's."""
    user = live.client(live.token("user"))
    model = user.post("/models", files={"file": ("mlp.onnx", MLP_ONNX.read_bytes())}).json()
    job = user.post("/jobs", json={"model_id": model["id"], "target": TARGET, "trials": 8}).json()
    with live.session() as s:
        task = job["tasks"][0]
        from db.models import Task

        wid = s.get(Task, task["id"]).workload_id
        queue.enqueue_candidates(s, task_id=task["id"], workload_id=wid, target_key=job["target_key"],
                                 traces=["[[],[]]"] * 4, round=0)
    worker = live.client(live.token("worker"))
    w = worker.post("/workers", json={"name": "fuzz", "target": TARGET}).json()
    lease = worker.post("/leases", json={"worker_id": w["id"], "max_candidates": 2}).json()
    assert lease["lease_id"], lease
    return {"token": live.token("admin", "fuzzer"), "job": job["id"], "lease": lease["lease_id"]}


def test_schemathesis_finds_no_server_error_or_schema_violation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with running(f"sqlite:///{tmp_path / 'tunehub.db'}", tmp_path) as live:
        seeded = _seed(live)
        headers = {"Authorization": f"Bearer {seeded['token']}"}
        schema = schemathesis.openapi.from_url(live.base_url + "/openapi.json")
        operations = [op.ok() for op in schema.get_all_operations()]
        operations.sort(key=lambda op: (op.method.upper() == "DELETE" and "/tokens" in op.path, op.path, op.method))
        assert len(operations) >= 14, [f"{op.method} {op.path}" for op in operations]
        failures: list[str] = []
        started = time.monotonic()
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                @given(case=op.as_strategy(generation_mode=mode))
                def fuzz(case) -> None:  # type: ignore[no-untyped-def]
                    response = case.call(base_url=live.base_url, headers=headers, timeout=60)
                    try:
                        case.validate_response(response, checks=CHECKS)
                    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001  (collect every operation's failures, then report)
                        failures.append(f"{op.method.upper()} {op.path} [{mode.value}] {response.status_code}: "
                                        f"{str(exc)[:600]}")

                try:
                    fuzz()
                except Unsatisfiable:  # nothing to negate (no parameters, no body): positive mode covers it
                    assert mode is GenerationMode.NEGATIVE, f"{op.method} {op.path}"
        print(f"schemathesis: {len(operations)} operations in {time.monotonic() - started:.0f} s")
        assert failures == [], "\n".join(failures[:30])
