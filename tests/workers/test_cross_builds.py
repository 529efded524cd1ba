"""Builds for hardware this machine does not have: NVIDIA GPUs (sm_80, sm_90) and aarch64.

The candidates come from MetaSchedule as the tuner makes them (a TuneContext on
the target); the builder sandbox does what it does on a real GPU host or build
host: apply the trace, build, export, and (CUDA) compile the device code with
nvcc. Running them needs the device: ``bench/gpu_check.py`` does that part on
a GPU machine.

Timing here: the CUDA tensor intrinsics import that a cuda TuneContext needs
(``prepare_tvm(("cuda",))``, TVM_NOTES §1) took 8-19 s on this 2-core box,
generating 2 candidates with the replay-trace strategy 0.1 s, and nvcc 0.7-1.4 s
per kernel.
"""

from __future__ import annotations

import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tvm_helpers import matmul_workload

from common.targets import canonical_target
from common.tvm_json import workload_hash, workload_to_json
from workers import sandbox_protocol as sp
from workers.detect import ARM_TRIPLE, cuda_target, find_cuda_compiler
from workers.sandbox_client import Sandbox

N = 64
FATBIN_MAGIC = 0xBA55ED50
EM_AARCH64 = 183


def ms_candidates(target: dict[str, Any], count: int = 2) -> list[str]:
    """Trace JSON of MetaSchedule candidates for the N³ matmul on ``target`` (as the tuner makes them)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from common.tvm_env import prepare_tvm
    from common.tvm_json import trace_to_json

    prepare_tvm((str(target["kind"]),))  # cuda: the slow tensor-intrinsics import
    mod = matmul_workload(N)
    ctx = ms.TuneContext(
        mod=mod,
        target=tvm.target.Target(target),
        space_generator="post-order-apply",
        search_strategy="replay-trace",
        num_threads=2,
        rand_state=0,
    )
    strategy = ctx.search_strategy
    strategy.pre_tuning(
        max_trials=count,
        num_trials_per_iter=count,
        design_spaces=ctx.generate_design_space(),
        database=ms.database.MemoryDatabase(),
        cost_model=ms.cost_model.RandomModel(),
    )
    cands = strategy.generate_measure_candidates() or []
    strategy.post_tuning()
    return [trace_to_json(c.sch.trace) for c in cands[:count]]


def build_request(target: dict[str, Any], trace: str, out: Path) -> sp.BuildRequest:
    mod = matmul_workload(N)
    return sp.BuildRequest(
        workload_hash=workload_hash(mod), mod_json=workload_to_json(mod), trace=trace, target=target, out=str(out)
    )


def elf_machine(path: str) -> int:
    with open(path, "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return struct.unpack_from("<H", head, 18)[0]


# --- CUDA ---------------------------------------------------------------------------

NVCC = find_cuda_compiler("nvcc")


@pytest.fixture(scope="module")
def cuda_sandbox() -> Iterator[Sandbox]:
    """A builder sandbox as a CUDA worker starts it (nvcc where this machine has it)."""
    with Sandbox(target_kind="cuda", num_threads=1, cuda_compiler=NVCC.mode if NVCC else None) as sb:
        yield sb


@pytest.mark.parametrize("cap", ["8.0", "9.0"])
def test_cuda_candidate_builds_for_sm(cap: str, cuda_sandbox: Sandbox, tmp_path: Path) -> None:
    target = cuda_target(cap)
    canonical_target(target)  # TVM accepts it
    started = time.monotonic()
    traces = ms_candidates(target)
    assert traces, "MetaSchedule proposed no CUDA candidates"
    generated_s = time.monotonic() - started
    for i, trace in enumerate(traces):
        built = cuda_sandbox.call(build_request(target, trace, tmp_path / f"c{i}"), 300)
        assert isinstance(built, sp.Built), built
        assert built.artifact.endswith(".so") and Path(built.artifact).stat().st_size > 0
        assert built.runnable  # runs on the GPU host it was built for
        if NVCC is None:
            assert built.device_binaries == []
            continue
        (binary,) = built.device_binaries
        data = Path(binary.path).read_bytes()
        assert binary.format == "fatbin" and len(data) == binary.bytes > 1000
        assert struct.unpack_from("<I", data)[0] == FATBIN_MAGIC
    print(f"{target['arch']}: {len(traces)} candidates generated in {generated_s:.1f} s (incl. cuda intrinsics import)")
    if NVCC is None:
        pytest.skip("no nvcc on PATH or under /usr/local/cuda*: CUDA source built, not compiled to a GPU binary")


# --- aarch64 -------------------------------------------------------------------------

ARM_TARGET = {"kind": "llvm", "mtriple": ARM_TRIPLE, "mattr": ["+neon"], "num-cores": 4}
ARM_GCC = shutil.which(f"{ARM_TRIPLE}-gcc")


@pytest.fixture(scope="module")
def arm_traces() -> list[str]:
    return ms_candidates(ARM_TARGET, count=2)


def test_aarch64_candidates_cross_build(arm_traces: list[str], tmp_path: Path) -> None:
    """Built and linked with the cross toolchain (an object file where there is none)."""
    with Sandbox(num_threads=1) as builder:
        for i, trace in enumerate(arm_traces):
            built = builder.call(build_request(ARM_TARGET, trace, tmp_path / f"a{i}"), 300)
            assert isinstance(built, sp.Built), built
            assert built.runnable is False  # not on this x86 machine
            assert elf_machine(built.artifact) == EM_AARCH64
            if ARM_GCC:
                assert built.linked and built.artifact.endswith(".so")
            else:
                assert not built.linked and built.artifact.endswith(".o")
                assert "no aarch64-linux-gnu-gcc" in built.note
    if not ARM_GCC:
        pytest.skip("aarch64-linux-gnu-gcc not installed (apt-get install gcc-aarch64-linux-gnu): checked the object file only")


def test_runner_answers_tvm_cuda_compile_from_the_builders_binaries(cuda_sandbox: Sandbox, tmp_path: Path) -> None:
    """What the runner does on a GPU host when TVM loads a module and asks for a binary
    (``tvm_callback_cuda_compile``): the builder's fatbin, not a second compile."""
    from workers.building import PrebuiltCuda, source_sha

    from workers.building import build_candidate, build_target, cuda_source

    target = cuda_target("9.0")
    trace = ms_candidates(target, 1)[0]
    built = cuda_sandbox.call(build_request(target, trace, tmp_path / "c"), 300)
    assert isinstance(built, sp.Built), built
    # (Loading the .so needs the CUDA driver; the same build here gives the same source.)
    source = cuda_source(build_candidate(matmul_workload(N), "main", trace, build_target(target)).timed)
    assert source is not None
    prebuilt = PrebuiltCuda(NVCC.mode if NVCC else None)
    prebuilt.arch = target
    for b in built.device_binaries:
        prebuilt.binaries[b.sha256] = b.path
    if NVCC is None:
        with pytest.raises(RuntimeError, match="no CUDA compiler"):
            prebuilt.compile(source)
        pytest.skip("no nvcc: the runner would say so rather than fail obscurely")
    assert source_sha(source) in prebuilt.binaries  # the exported module carries the same source
    assert prebuilt.compile(source) == Path(built.device_binaries[0].path).read_bytes()
    assert (prebuilt.hits, prebuilt.misses) == (1, 0)
    fresh = prebuilt.compile(source.replace("extern \"C\"", "extern \"C\" ", 1))  # unknown source: compiled here
    assert struct.unpack_from("<I", fresh)[0] == FATBIN_MAGIC and prebuilt.misses == 1
