"""TVM objects to and from the JSON that travels between rooms.

Traces, workloads and ArgInfo cross HTTP and the database as JSON text; nothing
is pickled (DESIGN: nothing received over the network is unpickled). Every
function imports TVM lazily.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tvm.ir import IRModule
    from tvm.s_tir import Schedule


def _plain_default(obj: Any) -> Any:
    """IntImm/FloatImm inside traces carry ``.value``; plain json cannot (TVM_NOTES §5)."""
    value = getattr(obj, "value", None)
    if value is not None:
        return value
    if isinstance(obj, str) or hasattr(obj, "__str__"):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj)!r}")


def trace_to_json(trace: Any) -> str:
    """A MetaSchedule Trace as compact JSON text: [instructions, decisions]."""
    return json.dumps(trace.as_json(), default=_plain_default, separators=(",", ":"))


def workload_to_json(mod: IRModule) -> str:
    import tvm

    return tvm.ir.save_json(mod)


def workload_from_json(text: str) -> IRModule:
    import tvm

    return tvm.ir.load_json(text)


def workload_hash(mod: IRModule) -> str:
    """The structural hash MetaSchedule's JSONDatabase writes as a workload's key."""
    import tvm_ffi

    return str(tvm_ffi.structural_hash(mod))


def args_info_json(mod: IRModule) -> str:
    from tvm.s_tir import meta_schedule as ms

    infos = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    return json.dumps([info.as_json() for info in infos], default=_plain_default, separators=(",", ":"))


def apply_trace(mod: IRModule, trace_json: str | list[Any]) -> Schedule:
    """A fresh schedule of ``mod`` with the trace replayed (postprocessing included)."""
    from tvm import s_tir
    from tvm.s_tir.schedule import Trace

    sch = s_tir.Schedule(mod)
    Trace.apply_json_to_schedule(json.loads(trace_json) if isinstance(trace_json, str) else trace_json, sch)
    return sch
