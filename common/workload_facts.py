"""Facts about one workload read from its module alone: ``family_key`` and ``argument_bytes``.

Used by the tuner (family transfer, latency estimates) and by the cost model's
workload features, which must not import the tuner; so they live on the
ground floor. TVM is imported where used.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any


def prim_func(mod: Any) -> Any:
    """The one PrimFunc of a workload's IRModule (ValueError when there is not exactly one)."""
    funcs = list(mod.functions.values())
    if len(funcs) != 1:
        raise ValueError(f"a workload has one PrimFunc, this module has {len(funcs)}")
    return funcs[0]


def family_key(mod: Any) -> str:
    """A 16-hex-digit key equal for workloads that differ only in shapes and dtypes.

    The skeleton: parameter count, then per block of the root its name, iterator
    kinds (spatial/reduce), read and write ranks and loop depth.
    """
    from tvm import s_tir

    func = prim_func(mod)
    sch = s_tir.Schedule(mod)
    parts = [f"params:{len(func.params)}"]
    for block_rv in sch.get_child_blocks(sch.get_sblock("root")):
        block = sch.get(block_rv)
        iters = "".join({0: "S", 2: "R"}.get(int(iv.iter_type), "O") for iv in block.iter_vars)
        reads = ",".join(str(len(r.region)) for r in block.reads)
        writes = ",".join(str(len(w.region)) for w in block.writes)
        parts.append(f"{block.name_hint}:{iters}:r{reads}:w{writes}:l{len(sch.get_loops(block_rv))}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def argument_bytes(args_info_json: str) -> int:
    """Bytes of a workload's arguments, from MetaSchedule's ArgInfo JSON (``[["TENSOR", dtype, shape], ...]``)."""
    total = 0
    for arg in json.loads(args_info_json or "[]"):
        if not (isinstance(arg, list) and len(arg) == 3 and arg[0] == "TENSOR"):
            continue
        _, dtype, shape = arg
        bits = int("".join(ch for ch in str(dtype) if ch.isdigit()) or 32)
        total += math.prod(int(d) for d in shape) * max(1, bits // 8)
    return total
