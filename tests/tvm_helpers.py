"""Small real TVM workloads and real MetaSchedule candidates for tests."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from common.tvm_env import prepare_tvm

CPU_TARGET: dict[str, Any] = {"kind": "llvm", "num-cores": 2}


def matmul_workload(n: int = 64, dtype: str = "float32") -> Any:
    """An IRModule {"main": n×n×n matmul PrimFunc}."""
    import tvm
    from tvm import te

    a = te.placeholder((n, n), name="A", dtype=dtype)
    b = te.placeholder((n, n), name="B", dtype=dtype)
    k = te.reduce_axis((0, n), "k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    return tvm.IRModule({"main": te.create_prim_func([a, b, c])})


PROPOSALS = 16
"""Candidates proposed per (size, seed) and session; a search costs seconds, whatever it returns."""


def real_candidates(n: int = 64, count: int = 4, seed: int = 0) -> tuple[str, ...]:
    """Trace JSON of ``count`` candidates proposed by MetaSchedule's evolutionary search.

    The first ``count`` of one search per (n, seed), so the tests that need a few real
    candidates of the same matmul share a search.
    """
    proposals = _proposals(n, seed, max(count, PROPOSALS))
    assert len(proposals) >= count, f"the search proposed {len(proposals)} candidates, {count} wanted"
    return proposals[:count]


@lru_cache(maxsize=8)
def _proposals(n: int, seed: int, count: int) -> tuple[str, ...]:
    prepare_tvm(("llvm",))
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from common.tvm_json import trace_to_json

    mod = matmul_workload(n)
    ctx = ms.TuneContext(
        mod=mod,
        target=tvm.target.Target(CPU_TARGET),
        space_generator="post-order-apply",
        search_strategy="evolutionary",
        num_threads=2,
        rand_state=seed,
    )
    spaces = ctx.generate_design_space()
    strategy = ctx.search_strategy
    strategy.pre_tuning(
        max_trials=count,
        num_trials_per_iter=count,
        design_spaces=spaces,
        database=ms.database.MemoryDatabase(),
        cost_model=ms.cost_model.RandomModel(),
    )
    cands = strategy.generate_measure_candidates() or []
    strategy.post_tuning()
    return tuple(trace_to_json(c.sch.trace) for c in cands[:count])
