"""Helpers shared by the worker tests (fixtures live in conftest.py)."""

from __future__ import annotations

import threading
from typing import Any


def measure_request(workload: dict[str, Any], trace: Any, **extra: Any) -> dict[str, Any]:
    """A sandbox request with fast timing settings."""
    req = {
        "op": "measure",
        "workload_hash": workload["hash"],
        "mod_json": workload["mod_json"],
        "trace": trace,
        "target": workload["target"],
        "number": 1,
        "repeat": 3,
        "min_repeat_ms": 0,
        "check": True,
    }
    req.update(extra)
    return req


def transposed_b_trace(mod: Any) -> str:
    """A real trace that changes what the program computes: it makes the kernel read
    B transposed (a layout transform of an input), as a buggy layout rewrite would."""
    from tvm import s_tir

    from common.tvm_json import trace_to_json

    sch = s_tir.Schedule(mod)
    sch.transform_layout(sch.get_sblock("C"), ("read", 1), lambda k, j: (j, k))
    return trace_to_json(sch.trace)


def layout_free_candidate(n: int, trace: str) -> tuple[Any, str]:
    """A matmul whose weight B is layout-free (as Relax marks constant weights) and a
    real candidate for it with MetaSchedule's RewriteLayout postprocessor applied:
    the timed kernel then takes B in a blocked layout, not B's own."""
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm_helpers import matmul_workload

    from common.tvm_json import apply_trace, trace_to_json

    plain = matmul_workload(n)
    mod = tvm.IRModule({"main": plain["main"].with_attr("layout_free_buffers", [1])})
    sch = apply_trace(mod, trace)
    assert ms.postproc.RewriteLayout().apply(sch)
    return mod, trace_to_json(sch.trace)


class FakeClock:
    """A clock that moves only when told (or when a ``ScriptedLoad`` window passes)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedLoad:
    """Answers the scripted shares in turn (the last one forever); each window advances the clock."""

    def __init__(self, clock: FakeClock, shares: list[float | None]) -> None:
        self.clock, self.shares, self.calls = clock, list(shares), 0

    def __call__(self, window_s: float, stop: threading.Event) -> float | None:
        self.clock.now += window_s
        share = self.shares[min(self.calls, len(self.shares) - 1)]
        self.calls += 1
        return share
