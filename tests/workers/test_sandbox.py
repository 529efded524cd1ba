"""The sandbox builds, checks and times real MetaSchedule candidates, and survives them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from worker_helpers import layout_free_candidate, measure_request, transposed_b_trace

from common.protocol import ErrorKind
from workers import sandbox_protocol as sp
from workers.checking import compare, random_array
from workers.sandbox import SandboxServer
from workers.sandbox_client import Sandbox

HANG_GUARD_S = 600
"""A measurement's timeout here only guards against a hang: under two busy loops an fp16 check, under a second
when quiet, was seen to take over 60 s."""


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    sb = Sandbox(num_threads=2, env={"TUNEHUB_SANDBOX_TEST_OPS": "1"})
    sb.start()
    yield sb
    sb.close()


def test_measures_real_candidates(sandbox: Sandbox, workload: dict[str, Any]) -> None:
    for trace in workload["traces"][:2]:
        result = sandbox.measure(measure_request(workload, trace, repeat=3), timeout_s=HANG_GUARD_S)
        assert result.error is None, result.error
        assert result.run_secs is not None and len(result.run_secs) == 3
        assert all(s > 0 for s in result.run_secs)
    assert sandbox.knows(workload["hash"])
    # The cached workload serves a request without mod_json, and the trace may be a list.
    import json

    req = measure_request(workload, json.loads(workload["traces"][2]), repeat=1, check=False)
    del req["mod_json"]
    result = sandbox.measure(req, timeout_s=HANG_GUARD_S)
    assert result.error is None and len(result.run_secs or []) == 1


def test_garbage_trace_is_an_error_result(sandbox: Sandbox, workload: dict[str, Any]) -> None:
    pid = sandbox.pid
    bad = sandbox.measure(measure_request(workload, '[[["NoSuchInstruction",[],[],[]]],[]]'), timeout_s=HANG_GUARD_S)
    assert bad.run_secs is None and bad.error is not None
    assert bad.error.startswith("apply trace:") and "NoSuchInstruction" in bad.error
    assert bad.error_kind is ErrorKind.build
    not_json = sandbox.measure(measure_request(workload, "{not json"), timeout_s=HANG_GUARD_S)
    assert not_json.error is not None and not_json.error.startswith("apply trace:")
    good = sandbox.measure(measure_request(workload, workload["traces"][0]), timeout_s=HANG_GUARD_S)
    assert good.error is None and sandbox.pid == pid


def test_wrong_output_is_caught(sandbox: Sandbox, workload: dict[str, Any]) -> None:
    result = sandbox.measure(measure_request(workload, transposed_b_trace(workload["mod"])), timeout_s=HANG_GUARD_S)
    assert result.run_secs is None
    assert result.error is not None and result.error.startswith("wrong output: buffer C max abs err"), result.error
    assert result.error_kind is ErrorKind.wrong_output
    unchecked = sandbox.measure(
        measure_request(workload, transposed_b_trace(workload["mod"]), check=False), timeout_s=HANG_GUARD_S
    )
    assert unchecked.error is None  # it builds and runs; only the check knows it is wrong


def test_layout_rewriting_candidate_is_checked_whole_and_timed(sandbox: Sandbox, workload: dict[str, Any]) -> None:
    from common.tvm_json import workload_hash, workload_to_json

    mod, trace = layout_free_candidate(64, workload["traces"][0])
    assert "TransformLayout" in trace
    req = measure_request(workload, trace, repeat=2)
    req.update(workload_hash=workload_hash(mod), mod_json=workload_to_json(mod))
    result = sandbox.measure(req, timeout_s=HANG_GUARD_S)
    assert result.error is None, result.error
    assert len(result.run_secs or []) == 2


def test_unknown_workload_without_mod_json(sandbox: Sandbox, workload: dict[str, Any]) -> None:
    req = measure_request(workload, workload["traces"][0], workload_hash="12345")
    del req["mod_json"]
    result = sandbox.measure(req, timeout_s=HANG_GUARD_S)
    assert result.error is not None and result.error.startswith("load workload:")
    assert result.error_kind is ErrorKind.build


def test_fp16_workload_passes_its_check(sandbox: Sandbox, workload: dict[str, Any]) -> None:
    from tvm_helpers import matmul_workload

    from common.tvm_json import workload_hash, workload_to_json

    mod = matmul_workload(64, "float16")
    req = measure_request(workload, workload["traces"][0], repeat=1)
    req.update(workload_hash=workload_hash(mod), mod_json=workload_to_json(mod))
    result = sandbox.measure(req, timeout_s=HANG_GUARD_S)
    assert result.error is None, result.error


def test_segfault_costs_only_the_sandbox(sandbox: Sandbox, workload: dict[str, Any]) -> None:
    pid = sandbox.pid
    crashed = sandbox.measure({"op": "crash", "signal": "SIGSEGV"}, timeout_s=HANG_GUARD_S)
    assert crashed.error is not None and crashed.error.startswith("sandbox crashed: killed by SIGSEGV")
    assert crashed.error_kind is ErrorKind.crash
    # A fresh process gets the workload again (the client tracks what each process holds).
    assert not sandbox.knows(workload["hash"])
    result = sandbox.measure(measure_request(workload, workload["traces"][0]), timeout_s=HANG_GUARD_S)
    assert result.error is None, result.error
    assert sandbox.pid != pid


def test_hang_is_a_timeout(sandbox: Sandbox, workload: dict[str, Any]) -> None:
    hung = sandbox.measure({"op": "sleep", "seconds": 600}, timeout_s=1)
    assert hung.error == "timeout: no result after 1 s" and hung.error_kind is ErrorKind.timeout
    result = sandbox.measure(measure_request(workload, workload["traces"][0]), timeout_s=HANG_GUARD_S)
    assert result.error is None, result.error


def test_test_ops_need_the_env_var() -> None:
    # In-process: without TUNEHUB_SANDBOX_TEST_OPS=1 the ops are unknown, never run.
    reply = SandboxServer(test_ops=False).handle(sp.CrashRequest(id=5))
    assert reply == sp.Failed(error="request: unknown op 'crash'", error_kind=ErrorKind.build, id=5)


def test_closed_sandbox_measures_nothing() -> None:
    sb = Sandbox()
    sb.close()
    sb.close()  # idempotent
    assert sb.measure({"op": "ping"}, timeout_s=1) is None  # interrupted: no outcome
    assert sb.starts == 0


def test_compare_tolerances() -> None:
    rng = np.random.default_rng(0)
    want = random_array(rng, "float32", (32, 32))
    assert compare("C", "float32", want + 1e-6, want) is None
    assert "max abs err" in (compare("C", "float32", want.T, want) or "")
    half = want.astype(np.float16)
    assert compare("C", "float16", (half * np.float16(1.001)).astype(np.float16), half) is None
    bf16 = random_array(rng, "bfloat16", (4, 4))
    assert str(bf16.dtype) == "bfloat16"
    ints = random_array(rng, "int32", (8,))
    assert ints.min() >= 0 and compare("I", "int32", ints, ints) is None
    assert "differ" in (compare("I", "int32", ints + 1, ints) or "")
    nan = want.copy()
    nan[0, 0] = np.nan
    assert "NaN" in (compare("C", "float32", nan, want) or "")


def test_bf16_vector_store_is_a_build_error_not_a_crash(sandbox: Sandbox, workload: dict[str, Any]) -> None:
    # TVM_NOTES §7: bf16->bf16 64-lane vector stores fail to build on CPU.
    from bad_workloads import bf16_vector_store_trace
    from tvm_helpers import matmul_workload

    from common.tvm_json import workload_hash, workload_to_json

    mod = matmul_workload(64, "bfloat16")
    req = measure_request(workload, bf16_vector_store_trace(64))
    req.update(workload_hash=workload_hash(mod), mod_json=workload_to_json(mod))
    pid = sandbox.pid
    result = sandbox.measure(req, timeout_s=HANG_GUARD_S)
    assert result.error is not None and result.error.startswith("build:"), result.error
    assert "dtype mismatch" in result.error and "bfloat16x64" in result.error
    assert sandbox.pid == pid  # an error, not a crash


def test_fp16_and_bf16_candidates_build_and_measure(sandbox: Sandbox, workload: dict[str, Any]) -> None:
    """Real MetaSchedule traces on 16-bit workloads: each measures, or fails as a build error."""
    from tvm_helpers import matmul_workload

    from common.tvm_json import workload_hash, workload_to_json

    for dtype in ("float16", "bfloat16"):
        mod = matmul_workload(64, dtype)
        outcomes = []
        for trace in workload["traces"]:
            req = measure_request(workload, trace, repeat=2)
            req.update(workload_hash=workload_hash(mod), mod_json=workload_to_json(mod))
            outcomes.append(sandbox.measure(req, timeout_s=600))  # a deadline: a busy machine builds slowly
        assert all(r.error is None or r.error.startswith("build:") for r in outcomes), [r.error for r in outcomes]
        assert any(r.run_secs and len(r.run_secs) == 2 for r in outcomes), (dtype, [r.error for r in outcomes])


def test_build_and_run_ops_split_across_processes(tmp_path: Any, workload: dict[str, Any]) -> None:
    """A builder process writes the artifact, a runner process (pinned) checks and times it."""
    from workers.detect import available_cores

    cpu = available_cores()[-1]
    with Sandbox(num_threads=1) as builder, Sandbox(cpus=[cpu]) as runner:
        fields = measure_request(workload, workload["traces"][0])
        trace = fields.pop("trace")
        workload_fields = {k: fields[k] for k in ("workload_hash", "mod_json", "target")}
        built = builder.call(sp.BuildRequest(**workload_fields, trace=trace, out=str(tmp_path / "c1")), 120)
        assert isinstance(built, sp.Built), built
        assert built.artifact == str(tmp_path / "c1.so") and (tmp_path / "c1.so").exists()
        assert built.runnable and built.linked and built.t_end >= built.t_start
        runner.start()
        assert runner.ready is not None and runner.ready.cpus == [cpu]
        with open(f"/proc/{runner.pid}/status") as f:  # the main (measuring) thread sits on its CPU
            assert f"Cpus_allowed_list:\t{cpu}\n" in f.read()
        req = sp.RunRequest(**workload_fields, number=1, repeat=3, warmup=2, cache_flush=True, min_repeat_ms=1,
                            artifact=built.artifact, check_artifact=built.check_artifact, timed_args=built.timed_args)
        ran = runner.call(req, 120)
        assert isinstance(ran, sp.Timed), ran
        assert len(ran.run_secs) == 3 and all(s > 0 for s in ran.run_secs)
        assert ran.others_busy is None or 0.0 <= ran.others_busy <= 1.0
        cal = runner.call(sp.CalibrateRequest(target=workload["target"]), 120)
        assert isinstance(cal, sp.Calibrated) and cal.secs > 0 and len(cal.results) == 7, cal
