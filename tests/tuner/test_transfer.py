"""Schedules carried over between shapes of one operator (``tuner.transfer``), with real TVM builds."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from common.tvm_env import prepare_tvm
from tuner.transfer import adapt_trace, family_key, fit_tile
from tvm_helpers import CPU_TARGET, matmul_workload, real_candidates


def _dense_relu(n: int) -> object:
    import tvm
    from tvm import te

    x = te.placeholder((n, n), name="X")
    w = te.placeholder((n, n), name="W")
    k = te.reduce_axis((0, n), "k")
    d = te.compute((n, n), lambda i, j: te.sum(x[i, k] * w[j, k], axis=k), name="dense")
    y = te.compute((n, n), lambda i, j: te.max(d[i, j], tvm.tirx.const(0, "float32")), name="relu")
    return tvm.IRModule({"main": te.create_prim_func([x, w, y])})


def _postprocs(mod: object) -> list[object]:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    ctx = ms.TuneContext(mod=mod, target=tvm.target.Target(CPU_TARGET), space_generator="post-order-apply",
                         search_strategy="evolutionary", num_threads=1)
    return list(ctx.space_generator.postprocs)


def test_fit_tile_keeps_inner_factors_and_multiplies_to_the_extent() -> None:
    assert fit_tile([6, 4, 16], 512) == [8, 4, 16]
    assert fit_tile([8, 4, 16], 512) == [8, 4, 16]
    assert fit_tile([5, 8, 16], 96) == [1, 6, 16]  # 16 fits; 8 does not fit the 6 left: the nearest divisor, 6
    assert fit_tile([32, 1, 20], 512) == [32, 1, 16]  # a 20-wide tile of 640 becomes 16-wide, not gcd's 4
    assert fit_tile([1, 7], 1) == [1, 1]
    assert fit_tile([2, 48], 128, max_innermost=32) == [4, 32]  # MetaSchedule's innermost cap holds
    rng = random.Random(0)
    for _ in range(500):
        factors = [rng.choice([1, 2, 3, 4, 5, 8, 16, 20, 32]) for _ in range(rng.randint(2, 5))]
        extent = rng.randint(1, 3000)
        out = fit_tile(factors, extent, max_innermost=64)
        assert int(np.prod(out)) == extent and len(out) == len(factors)
        assert out[-1] <= 64
        # A factor that divides what is left is kept as it is.
        if extent % factors[-1] == 0:
            assert out[-1] == factors[-1]


def test_family_is_shape_and_dtype_free() -> None:
    prepare_tvm(("llvm",))
    key = family_key(matmul_workload(32))
    assert family_key(matmul_workload(48)) == key
    assert family_key(matmul_workload(32, "float16")) == key
    assert family_key(_dense_relu(32)) != key
    assert family_key(_dense_relu(32)) == family_key(_dense_relu(64))


def test_adapted_schedules_build_and_compute_the_new_shape() -> None:
    """MetaSchedule candidates of a 32³ matmul, carried to 48³: each builds and multiplies correctly;
    onto a dense+relu (another family) they do not carry over."""
    prepare_tvm(("llvm",))
    import tvm

    from common.tvm_json import apply_trace, trace_to_json

    src, dst = matmul_workload(32), matmul_workload(48)
    postprocs = _postprocs(dst)
    traces = real_candidates(32, count=4)
    assert traces
    rng = np.random.default_rng(0)
    a, b = rng.random((48, 48), dtype=np.float32), rng.random((48, 48), dtype=np.float32)
    adapted = 0
    for trace in traces:
        sch = adapt_trace(src, trace, dst, postprocs)
        assert sch is not None
        adapted += 1
        # What a worker does with it: replay the stored JSON (postprocessing included), build, run.
        replayed = apply_trace(dst, json.dumps(json.loads(trace_to_json(sch.trace))))
        lib = tvm.tirx.build(replayed.mod, target=tvm.target.Target(CPU_TARGET))
        dev = tvm.cpu()
        out = tvm.runtime.tensor(np.zeros((48, 48), np.float32), dev)
        lib["main"](tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev), out)
        np.testing.assert_allclose(out.numpy(), a @ b, rtol=1e-4)
    assert adapted == len(traces)
    other = _dense_relu(48)
    assert all(adapt_trace(src, t, other, _postprocs(other)) is None for t in traces)


def test_a_trace_that_is_not_json_does_not_carry_over() -> None:
    prepare_tvm(("llvm",))
    dst = matmul_workload(48)
    assert adapt_trace(matmul_workload(32), "[[], []", dst, _postprocs(dst)) is None


@pytest.mark.parametrize("n", [40])
def test_family_key_of_a_module_with_two_functions_is_an_error(n: int) -> None:
    import tvm

    prepare_tvm(("llvm",))
    mod = matmul_workload(n)
    two = tvm.IRModule({"main": mod["main"], "other": mod["main"]})
    with pytest.raises(ValueError, match="one PrimFunc"):
        family_key(two)
