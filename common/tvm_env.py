"""Process set-up for TVM: fast tensor-intrinsic import and thread counts.

``import tvm.s_tir.tensor_intrin`` takes ~50 s (TVM_NOTES §1), and both
``TuneContext`` and MetaSchedule's default builder trigger it. We put a hollow
package in ``sys.modules`` and import only the intrinsics a target kind needs.
Call ``prepare_tvm()`` before the first MetaSchedule use in a process.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

_INTRIN_FOR_KIND = {
    "llvm": ("x86", "arm_cpu"),
    "cuda": ("cuda",),
    "rocm": ("rocm",),
    "metal": ("metal",),
}
_loaded: set[str] = set()


def prepare_tvm(target_kinds: tuple[str, ...] = ("llvm",), num_threads: int | None = None) -> None:
    """Stub the tensor_intrin package and import the intrinsics for ``target_kinds``.

    ``num_threads`` sets ``TVM_NUM_THREADS`` (TVM used 1 thread on a 2-core box
    when unset, TVM_NOTES §0); it must run before TVM's thread pool starts.
    """
    if num_threads:
        os.environ["TVM_NUM_THREADS"] = str(num_threads)
    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        import tvm.s_tir  # noqa: F401  (the parent must exist)

        spec = importlib.util.find_spec("tvm.s_tir")
        assert spec is not None and spec.submodule_search_locations
        stub = types.ModuleType(name)
        stub.__path__ = [os.path.join(list(spec.submodule_search_locations)[0], "tensor_intrin")]
        sys.modules[name] = stub
    for kind in target_kinds:
        for sub in _INTRIN_FOR_KIND.get(kind, ()):
            if sub not in _loaded:
                importlib.import_module(f"{name}.{sub}")
                _loaded.add(sub)
