"""Real TVM programs that misbehave, for the worker's isolation tests.

Nothing here is faked: each is a PrimFunc TVM builds and runs, and the
misbehaviour is the program's own. A candidate of such a workload (any trace,
even the empty one) makes the runner sandbox build the program and run it
as the untuned reference.
"""

from __future__ import annotations

from typing import Any

EMPTY_TRACE = "[[],[]]"


def segfault_workload() -> Any:
    """Reads 4 TiB past its input: SIGSEGV when run (TIR does not bounds-check)."""
    import tvm
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def main(A: T.Buffer((16,), "float32"), B: T.Buffer((16,), "float32")):
        for i in range(16):
            with T.sblock("B"):
                vi = T.axis.spatial(16, i)
                B[vi] = A[T.Cast("int64", vi) * T.int64(1 << 40) + T.int64(1 << 40)]

    return tvm.IRModule({"main": main})


def hang_workload() -> Any:
    """Never returns: ``while A[0] >= 0: A[0] = (A[0] + 1) % 2`` (each pass stores, so
    LLVM may not drop the loop)."""
    import tvm
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def main(A: T.Buffer((1,), "int32")):
        with T.sblock("root"):
            while A[0] >= 0:
                A[0] = (A[0] + 1) % 2

    return tvm.IRModule({"main": main})


def bf16_vector_store_trace(n: int = 64) -> str:
    """A real trace for the n³ bf16->bf16 matmul whose build fails on CPU (TVM_NOTES §7):
    the reduction's init is vectorised 64 wide, and LLVM codegen rejects the
    ``bfloat16x64`` store into the uint16-backed buffer."""
    from tvm import s_tir
    from tvm_helpers import matmul_workload

    from common.tvm_json import trace_to_json

    sch = s_tir.Schedule(matmul_workload(n, "bfloat16"))
    block = sch.get_sblock("C")
    i, j, k = sch.get_loops(block)
    jo, ji = sch.split(j, [None, 64])
    sch.reorder(i, jo, k, ji)
    init = sch.decompose_reduction(block, k)
    sch.vectorize(sch.get_loops(init)[-1])
    return trace_to_json(sch.trace)
