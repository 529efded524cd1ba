"""MetaSchedule's ``default_build`` minus the ~50 s tensor-intrinsic import (TVM_NOTES §1).

A module of its own so ``LocalBuilder``'s worker processes can unpickle ``fast_build``
by reference (the bench puts this folder on their ``PYTHONPATH``).
"""


def fast_build(mod, target, _params):  # type: ignore[no-untyped-def]
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm.tirx.build(mod, target=target)
