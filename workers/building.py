"""Turning a candidate into something that runs: apply its trace, build, export.

Used inside sandbox processes only (TVM is imported by every function). Three
kinds of target:

* native CPU (``llvm`` for this machine's arch): a shared library the runner
  loads (``export_library`` links with the system C compiler);
* cross CPU (``llvm`` with an ``mtriple`` of another arch, e.g. an aarch64 board
  served from an x86 build host): linked with ``<triple>-gcc`` when that
  toolchain is on PATH, else left as an object file; never run here;
* CUDA (``cuda`` with an ``arch``): the host side is built for ``llvm`` and the
  device side holds CUDA *source* (TVM 0.27 compiles it at load, TVM_NOTES §9).
  When a CUDA compiler is configured the builder turns that source into a
  fatbin (nvcc) or cubin (NVRTC) ahead of time, so the expensive step happens in
  the parallel build phase and a broken kernel fails as a build error; the runner
  then answers TVM's ``tvm_callback_cuda_compile`` from those files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from typing import Any

from workers.detect import host_arch, target_arch

ArgSpec = tuple[str, str, tuple[int, ...]]  # (buffer name, dtype, shape)
CALIBRATION_N = {"llvm": 128, "cuda": 1024}  # matmul size of the calibration kernel


def build_target(target_json: dict[str, Any]) -> Any:
    """The TVM Target to build with: CUDA gets an ``llvm`` host when it names none."""
    import tvm

    target = tvm.target.Target(target_json)
    if target.kind.name == "cuda" and target.host is None:
        target = tvm.target.Target(target_json, host=tvm.target.Target({"kind": "llvm"}))
    return target


def needs_intrinsics(trace: Any) -> bool:
    """A trace that tensorizes needs the target's tensor intrinsics registered first.

    Loading them is slow (cuda: 8-30 s, TVM_NOTES §1), so a sandbox loads them
    only for the first trace that needs them.
    """
    text = trace if isinstance(trace, str) else repr(trace)
    return "Tensorize" in text


def arg_specs(func: Any) -> list[ArgSpec]:
    """(name, dtype, shape) of each PrimFunc parameter; static-shape tensors only."""
    from tvm.s_tir import meta_schedule as ms

    specs = []
    for param, info in zip(func.params, ms.arg_info.ArgInfo.from_prim_func(func)):
        kind, dtype, shape = info.as_json()
        if kind != "TENSOR":
            raise ValueError(f"argument {param.name} is a {kind}; only tensors are supported")
        specs.append((str(param.name), str(dtype), tuple(int(d) for d in shape)))
    return specs


@dataclass
class Built:
    """A candidate built: ``timed`` is what is timed, ``checked`` what is checked.

    They differ when the schedule rewrites a weight's layout: the timed kernel
    then expects pre-rewritten weights (as it runs once deployed), so the
    correctness check runs the whole program instead.
    """

    timed: Any  # runtime Module
    checked: Any  # runtime Module (the same object when nothing was rewritten)
    timed_args: list[ArgSpec]

    @property
    def same(self) -> bool:
        return self.checked is self.timed


def build_candidate(mod: Any, entry: str, trace: Any, target: Any, *, check: bool = True) -> Built:
    """Apply ``trace`` to ``mod`` and build it for ``target`` (both steps may raise)."""
    return build_scheduled(schedule(mod, trace), entry, target, check=check)


def schedule(mod: Any, trace: Any) -> Any:
    """``mod`` with the candidate's trace replayed; raises on a trace that does not apply."""
    from common.tvm_json import apply_trace

    return apply_trace(mod, trace).mod


def build_scheduled(scheduled: Any, entry: str, target: Any, *, check: bool = True) -> Built:
    """Build a scheduled module for ``target``; raises TVM's error on a failed build."""
    import tvm_ffi
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    # As MetaSchedule's default builder (TVM_NOTES §1): time the kernel without
    # the weight layout-rewrite block, as it runs once deployed.
    timed_mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(scheduled)
    timed = _tir_build(timed_mod, target)
    checked = timed
    if check and not tvm_ffi.structural_equal(timed_mod, scheduled):
        checked = _tir_build(scheduled, target)
    return Built(timed=timed, checked=checked, timed_args=arg_specs(timed_mod[entry]))


def _tir_build(mod: Any, target: Any) -> Any:
    import tvm

    return tvm.tirx.build(mod, target=target)


# --- export ------------------------------------------------------------------------


def cross_compiler_for(target_json: dict[str, Any]) -> str | None:
    """``aarch64-linux-gnu-gcc`` for an aarch64 target built on another arch; None when
    the target runs here or no such compiler is on PATH."""
    arch = target_arch(target_json)
    if arch is None or arch == host_arch():
        return None
    triple = str(target_json.get("mtriple"))
    return shutil.which(f"{triple}-gcc")


def export_built(
    built: Built, target_json: dict[str, Any], out: str, *, cuda_compiler: str | None = None
) -> dict[str, Any]:
    """Write the build to files named ``out.*`` and describe them (JSON-able).

    Keys: ``artifact`` (the timed module), ``check_artifact`` (None when the same),
    ``runnable`` (False for cross-built code), ``linked`` (False when only an object
    file could be written), ``device_binaries`` ([{sha256, path, format, bytes}] for
    CUDA when a compiler is configured), ``timed_args``, ``note``.
    """
    kind = str(target_json.get("kind"))
    info: dict[str, Any] = {
        "timed_args": [list(a) for a in built.timed_args],
        "runnable": True,
        "linked": True,
        "device_binaries": [],
        "note": None,
    }
    modules = [("artifact", built.timed, out)]
    if not built.same:
        modules.append(("check_artifact", built.checked, out + ".check"))
    else:
        info["check_artifact"] = None
    arch = target_arch(target_json)
    cross = kind == "llvm" and arch is not None and arch != host_arch()
    for key, rt_mod, path in modules:
        if cross:
            info["runnable"] = False
            cc = cross_compiler_for(target_json)
            if cc is None:
                rt_mod.write_to_file(path + ".o")
                info[key], info["linked"] = path + ".o", False
                info["note"] = f"object file only: no {target_json.get('mtriple')}-gcc on PATH to link it"
                continue
            from tvm.support import cc as tvm_cc

            rt_mod.export_library(path + ".so", fcompile=tvm_cc.cross_compiler(cc))
        else:
            rt_mod.export_library(path + ".so")
        info[key] = path + ".so"
        if kind == "cuda" and cuda_compiler:
            info["device_binaries"] += compile_device_code(rt_mod, target_json, cuda_compiler, path)
    return info


def cuda_source(rt_mod: Any) -> str | None:
    """The CUDA source a built module carries (its device import), or None."""
    for imp in rt_mod.imports:
        if imp.kind == "cuda":
            return str(imp.inspect_source("cuda"))
    return None


def compile_device_code(rt_mod: Any, target_json: dict[str, Any], mode: str, path: str) -> list[dict[str, Any]]:
    """Compile the module's CUDA source for the target's arch with nvcc (fatbin) or NVRTC
    (cubin), write it to ``path.<format>``; raises with the compiler's message."""
    src = cuda_source(rt_mod)
    if src is None:
        return []
    fmt = "fatbin" if mode == "nvcc" else "cubin"
    binary = compile_cuda_source(src, target_json, mode)
    with open(f"{path}.{fmt}", "wb") as f:
        f.write(binary)
    return [{"sha256": source_sha(src), "path": f"{path}.{fmt}", "format": fmt, "bytes": len(binary)}]


def compile_cuda_source(src: str, target_json: dict[str, Any], mode: str) -> bytes:
    import tvm
    from tvm.support import nvcc

    arch = str(target_json.get("arch") or "") or None
    fmt = "fatbin" if mode == "nvcc" else "cubin"
    with tvm.target.Target(target_json):  # nvcc reads the arch of the current target
        return bytes(nvcc.compile_cuda(src, target_format=fmt, arch=arch, compiler=mode))


def source_sha(src: str) -> str:
    return hashlib.sha256(src.encode()).hexdigest()


class PrebuiltCuda:
    """Answers TVM's ``tvm_callback_cuda_compile`` from the builders' binaries.

    TVM 0.27 keeps CUDA source in a built module and compiles it when the module
    is loaded on the GPU host. The runner registers this callback once; a source
    a builder already compiled is answered from its file (``hits``), anything
    else is compiled here with the configured compiler (``misses``).
    """

    def __init__(self, mode: str | None):
        self.mode = mode
        self.arch: dict[str, Any] | None = None  # the target of the current run
        self.binaries: dict[str, str] = {}  # source sha256 -> file
        self.hits = 0
        self.misses = 0

    def install(self) -> None:
        import tvm_ffi

        tvm_ffi.register_global_func("tvm_callback_cuda_compile", self.compile, override=True)

    def compile(self, code: str) -> bytearray:
        """The binary for ``code`` (a bytearray, as TVM's own callback returns)."""
        path = self.binaries.get(source_sha(code))
        if path and os.path.exists(path):
            self.hits += 1
            with open(path, "rb") as f:
                return bytearray(f.read())
        self.misses += 1
        if not self.mode:
            from workers.detect import NO_CUDA_COMPILER

            raise RuntimeError(NO_CUDA_COMPILER)
        return bytearray(compile_cuda_source(code, self.arch or {"kind": "cuda"}, self.mode))


def load_artifact(path: str) -> Any:
    import tvm

    return tvm.runtime.load_module(path)


# --- the calibration kernel --------------------------------------------------------


def calibration_kernel(target: Any) -> tuple[Any, list[ArgSpec]]:
    """A fixed small matmul built for ``target``: its time is the worker's pulse.

    CPU: a 128³ fp32 matmul with its outer loop parallel (every measuring thread
    takes part) and the untuned loop order (memory-bound, so a busy memory
    system shows as well as a slow core). CUDA: a 1024³ matmul scheduled by
    DLight's default GPU rules. The schedule never changes, so its time moves
    only when the machine does.
    """
    import tvm
    from tvm import s_tir, te

    kind = target.kind.name
    n = CALIBRATION_N.get(kind, 128)
    a = te.placeholder((n, n), name="A", dtype="float32")
    b = te.placeholder((n, n), name="B", dtype="float32")
    k = te.reduce_axis((0, n), "k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    mod = tvm.IRModule({"main": te.create_prim_func([a, b, c])})
    if kind == "cuda":
        from tvm.s_tir import dlight as dl

        with target:
            mod = dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.Fallback())(mod)
    else:
        sch = s_tir.Schedule(mod)
        i, _, _ = sch.get_loops(sch.get_sblock("C"))
        sch.parallel(i)
        mod = sch.mod
    return tvm.tirx.build(mod, target=target), arg_specs(mod["main"])
