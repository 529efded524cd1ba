"""Shared pieces of the MetaSchedule API tests: real workloads, traces and records, and a side-by-side view."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tvm_helpers import matmul_workload

from common.tvm_env import prepare_tvm

prepare_tvm(("llvm",))

import tvm
from tvm import s_tir, te
from tvm.s_tir import meta_schedule as ms

TARGET = {"kind": "llvm", "num-cores": 2}


def matmul_relu(n: int = 16) -> Any:
    """A matmul followed by a ReLU: the same anchor block as ``matmul_workload(n)``, another module."""
    a = te.placeholder((n, n), name="A")
    b = te.placeholder((n, n), name="B")
    k = te.reduce_axis((0, n), "k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    d = te.compute((n, n), lambda i, j: te.max(c[i, j], 0.0), name="D")
    return tvm.IRModule({"main": te.create_prim_func([a, b, d])})


def split_trace(mod: Any, factor: int) -> Any:
    """A real trace: the matmul's first loop split by ``factor`` (factor 0: only GetSBlock)."""
    sch = s_tir.Schedule(mod)
    block = sch.get_sblock("C")
    if factor:
        i, _, _ = sch.get_loops(block)
        sch.split(i, [None, factor])
    return sch.trace


def empty_trace(mod: Any) -> Any:
    return s_tir.Schedule(mod).trace


def make_record(wl: Any, trace: Any, run_secs: list[float] | None, target: Any | None = None) -> Any:
    return ms.database.TuningRecord(
        trace, wl, run_secs, tvm.target.Target(target or TARGET), ms.arg_info.ArgInfo.from_prim_func(wl.mod["main"])
    )


def _plain(obj: Any) -> Any:
    value = getattr(obj, "value", None)
    return value if value is not None else str(obj)


def view(record: Any) -> tuple[str, list[float] | None, int]:
    """What must agree between two databases: trace, run_secs and the workload (by structural hash)."""
    import tvm_ffi

    secs = None if record.run_secs is None else [float(s) for s in record.run_secs]
    return json.dumps(record.trace.as_json(), default=_plain), secs, int(tvm_ffi.structural_hash(record.workload.mod))


def views(records: Any) -> list[tuple[str, list[float] | None, int]]:
    return [view(r) for r in records]


@pytest.fixture
def matmul() -> Any:
    return matmul_workload(16)

