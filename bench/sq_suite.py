"""The search_quality suite: its workloads (TE → PrimFunc), budgets and timing settings."""

from __future__ import annotations

import json
from typing import Any

SUITE = ("matmul512", "matmul1024", "conv2d_resnet", "dense_bias_relu", "batch_matmul", "matmul512_fp16")
QUICK = ("matmul512", "dense_bias_relu_small", "matmul256_fp16")
BUDGET = {"full": 256, "quick": 32}  # trials per workload
PER_BATCH = {"full": 16, "quick": 8}
WARM_RELATED = {"full": ("matmul384", "matmul640"), "quick": ("matmul384", "matmul640")}
WARM_TARGET = "matmul512"
TIMING = {"number": 3, "repeat": 1, "min_repeat_ms": 100}  # MetaSchedule's LocalRunner
# The worker times with warm caches too: its default flushes caches before each
# repeat, which optimises for another objective than the warm re-timing.
WORKER_TIMING = {"TUNEHUB_WORKER_NUMBER": "1", "TUNEHUB_WORKER_REPEAT": "3", "TUNEHUB_WORKER_MIN_REPEAT_MS": "40",
                 "TUNEHUB_WORKER_WARMUP": "1", "TUNEHUB_WORKER_CACHE_FLUSH": "false"}


def workload(name: str) -> tuple[Any, float]:
    """(IRModule {"main": PrimFunc}, FLOPs) of a suite workload; ValueError for an unknown name."""
    import tvm
    from tvm import te, topi

    def mm(n: int, m: int, k: int, dtype: str = "float32", acc: str = "float32") -> tuple[Any, float]:
        a = te.placeholder((n, k), dtype, name="A")
        b = te.placeholder((k, m), dtype, name="B")
        r = te.reduce_axis((0, k), "k")
        c = te.compute((n, m), lambda i, j: te.sum(a[i, r].astype(acc) * b[r, j].astype(acc), axis=r), name="C")
        return tvm.IRModule({"main": te.create_prim_func([a, b, c])}), 2.0 * n * m * k

    if name.startswith("matmul") and name.endswith("_fp16"):
        n = int(name[len("matmul"):-len("_fp16")])
        return mm(n, n, n, "float16", "float32")
    if name.startswith("matmul"):
        n = int(name[len("matmul"):])
        return mm(n, n, n)
    if name.startswith("dense_bias_relu"):
        n, k, m = (128, 1024, 1024) if name == "dense_bias_relu" else (64, 512, 512)
        x = te.placeholder((n, k), "float32", name="X")
        w = te.placeholder((m, k), "float32", name="W")
        bias = te.placeholder((m,), "float32", name="bias")
        r = te.reduce_axis((0, k), "k")
        d = te.compute((n, m), lambda i, j: te.sum(x[i, r] * w[j, r], axis=r), name="dense")
        y = te.compute((n, m), lambda i, j: te.max(d[i, j] + bias[j], tvm.tirx.const(0, "float32")), name="relu")
        return tvm.IRModule({"main": te.create_prim_func([x, w, bias, y])}), 2.0 * n * m * k
    if name == "batch_matmul":
        b_, n = 8, 256
        a = te.placeholder((b_, n, n), "float32", name="A")
        b = te.placeholder((b_, n, n), "float32", name="B")
        r = te.reduce_axis((0, n), "k")
        c = te.compute((b_, n, n), lambda q, i, j: te.sum(a[q, i, r] * b[q, r, j], axis=r), name="C")
        return tvm.IRModule({"main": te.create_prim_func([a, b, c])}), 2.0 * b_ * n**3
    if name == "conv2d_resnet":  # ResNet-50 stage-2 3×3 conv: 1×64×56×56, 64 filters, pad 1
        data = te.placeholder((1, 64, 56, 56), "float32", name="data")
        kernel = te.placeholder((64, 64, 3, 3), "float32", name="kernel")
        out = topi.nn.conv2d_nchw(data, kernel, 1, 1, 1)
        return tvm.IRModule({"main": te.create_prim_func([data, kernel, out])}), 2.0 * 64 * 56 * 56 * 64 * 9
    raise ValueError(f"unknown workload {name!r}")


def random_inputs(mod: Any) -> list[Any]:
    """Deterministic random arrays for the PrimFunc's arguments (outputs included)."""
    import numpy as np

    from common.tvm_json import args_info_json

    rng = np.random.default_rng(0)
    return [rng.uniform(-1, 1, size=shape).astype(dtype) for _, dtype, shape in json.loads(args_info_json(mod))]
