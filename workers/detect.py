"""What this machine is: the TVM targets it can serve and a hardware description.

(Over 400 lines on purpose: x86, ARM and NVIDIA detection side by side, one concept: what this machine is.)

The target is what measurements are keyed by, so it must name the real hardware:

* x86: ``mcpu`` from LLVM (``"mcpu": "native"`` silently falls back to a generic
  CPU in TVM 0.27, TVM_NOTES §0), ``mattr`` from the CPU flags the kernel
  reports, and ``num-cores``. ``mattr`` also switches off vector extensions
  that ``mcpu`` implies but the machine does not have (a VM that hides AVX-512
  of an AVX-512 CPU would otherwise get kernels that die of SIGILL).
* ARM64: ``mtriple`` aarch64-linux-gnu, ``mattr`` +neon and what the board's
  ``/proc/cpuinfo`` ``Features`` line offers (dotprod, fp16, i8mm, sve, ...).
* NVIDIA GPUs: ``kind: cuda`` with ``arch`` from the compute capability
  (``nvidia-smi --query-gpu=compute_cap``, or the CUDA driver where nvidia-smi is
  too old), plus the per-block limits MetaSchedule's CUDA rules need.

A process under user-mode emulation (qemu-user running an aarch64 worker on an
x86 host) detects the guest's architecture correctly but its timings say nothing
about real hardware; ``detect_emulation`` finds it so the worker can say so.

The parsers are pure functions of text so they can be tested on any machine.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from common.targets import canonical_target

# /proc/cpuinfo flag -> LLVM feature, for the vector extensions codegen uses.
X86_FEATURES: dict[str, str] = {
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512cd": "avx512cd",
    "avx512dq": "avx512dq",
    "avx512vl": "avx512vl",
    "avx512_vnni": "avx512vnni",
    "avx512_bf16": "avx512bf16",
    "avx512_fp16": "avx512fp16",
    "avx_vnni": "avxvnni",
    "amx_tile": "amx-tile",
    "amx_int8": "amx-int8",
    "amx_bf16": "amx-bf16",
}
# /proc/cpuinfo "Features" of an arm64 kernel -> LLVM AArch64 feature.
ARM_FEATURES: dict[str, str] = {
    "asimd": "neon",
    "asimdhp": "fullfp16",
    "asimddp": "dotprod",
    "i8mm": "i8mm",
    "bf16": "bf16",
    "sve": "sve",
    "sve2": "sve2",
    "sme": "sme",
}
ARM_TRIPLE = "aarch64-linux-gnu"

# What every CUDA GPU since Kepler has per block (TVM's own nvidia/* tags use these);
# MetaSchedule's CUDA rules refuse a target without them.
NVIDIA_SMI_QUERY = "index,uuid,name,compute_cap,memory.total"


def available_cores() -> list[int]:
    """The CPU ids this process may run on (respects taskset/cgroup affinity)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def parse_cpu_list(text: str) -> list[int]:
    """``"0-3,8"`` -> ``[0, 1, 2, 3, 8]`` (the kernel's cpulist format, as taskset takes it)."""
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            cpus.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            raise ValueError(f"not a CPU list: {text!r} (expected e.g. 0-3,8)") from None
    if not cpus:
        raise ValueError(f"empty CPU list: {text!r}")
    return sorted(cpus)


# --- CPUs -----------------------------------------------------------------------


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first value of each field of ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def x86_mattr(flags: set[str], implied: set[str] | None = None) -> list[str]:
    """``+feature`` for each vector extension the CPU reports; ``-feature`` for each
    that ``mcpu`` implies (``implied``, LLVM's view) but the CPU does not report."""
    have = {llvm for flag, llvm in X86_FEATURES.items() if flag in flags}
    known = set(X86_FEATURES.values())
    missing = (implied or set()) & known - have
    return sorted(f"+{f}" for f in have) + sorted(f"-{f}" for f in missing)


def arm_mattr(features: set[str]) -> list[str]:
    """``+neon`` (every AArch64 core has Advanced SIMD) and the extensions the board reports."""
    have = {"neon"} | {llvm for flag, llvm in ARM_FEATURES.items() if flag in features}
    return sorted(f"+{f}" for f in have)


def cpu_target_from(
    *, machine: str, cpuinfo: str, num_cores: int, mcpu: str | None = None, implied: set[str] | None = None
) -> dict[str, Any]:
    """The target for a CPU described by ``uname -m``, ``/proc/cpuinfo`` and LLVM's CPU name.

    Pure: no TVM, no files. ``implied`` is the feature set LLVM assumes for ``mcpu``.
    """
    target: dict[str, Any] = {"kind": "llvm"}
    if mcpu and mcpu != "generic":
        target["mcpu"] = mcpu
    fields = parse_cpuinfo(cpuinfo)
    if machine.lower() in ("aarch64", "arm64"):
        target["mtriple"] = ARM_TRIPLE
        target["mattr"] = arm_mattr(set(fields.get("Features", "").split()))
    elif machine.lower() in ("x86_64", "amd64", "i686", "x86"):
        mattr = x86_mattr(set(fields.get("flags", "").split()), implied)
        if mattr:
            target["mattr"] = mattr
    target["num-cores"] = int(num_cores)
    return target


def detect_cpu_target(num_cores: int | None = None) -> dict[str, Any]:
    """A TVM target JSON dict for this x86 or ARM CPU, validated by TVM.

    ``num_cores`` overrides the detected core count (e.g. to leave cores free
    for other work on the machine); it also sets the sandbox's thread count.
    """
    import tvm

    mcpu = str(tvm.target.codegen.llvm_get_system_cpu() or "")
    implied: set[str] = set()
    if mcpu and mcpu != "generic":
        try:
            implied = {str(f) for f in tvm.target.codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))}
        except Exception:  # noqa: BLE001 - an LLVM that cannot list features: trust the flags alone
            implied = set()
    target = cpu_target_from(
        machine=platform.machine(),
        cpuinfo=_read_cpuinfo(),
        num_cores=int(num_cores or len(available_cores())),
        mcpu=mcpu,
        implied=implied,
    )
    canonical_target(target)  # raises BadInput with TVM's reason if LLVM disagrees
    return target


def host_arch() -> str:
    """``x86_64`` or ``aarch64`` (``arm64`` on macOS is spelled the LLVM way)."""
    m = platform.machine().lower()
    return "aarch64" if m in ("arm64", "aarch64") else m


def target_arch(target: dict[str, Any]) -> str | None:
    """The CPU architecture an llvm target's code runs on; None for the host's own."""
    triple = str(target.get("mtriple") or "")
    return triple.split("-")[0] if triple else None


def runs_here(target: dict[str, Any]) -> bool:
    """Whether this machine can run what a target builds (no cross-compiled code)."""
    if target.get("kind") == "cuda":
        return True  # the GPU is checked separately
    arch = target_arch(target)
    return arch is None or arch == host_arch()


# --- emulation -------------------------------------------------------------------

X86_CPUINFO_FIELDS = ("vendor_id", "flags")  # fields only an x86 kernel's /proc/cpuinfo has


def emulation_from(*, machine: str, cpuinfo: str, comm: str) -> str | None:
    """Why a process looks emulated, or None: pure, from ``uname -m``, ``/proc/cpuinfo``
    and ``/proc/self/comm``.

    qemu-user passes the host's ``/proc/cpuinfo`` through (an aarch64 process that
    reads an x86 CPU's fields is not on an aarch64 CPU), and without binfmt_misc the
    kernel names the process after the emulator (``qemu-aarch64-st``).
    """
    name = comm.strip()
    if name.startswith("qemu-"):
        return f"process runs under {name} (user-mode emulation)"
    fields = parse_cpuinfo(cpuinfo)
    if machine.lower() in ("aarch64", "arm64") and any(f in fields for f in X86_CPUINFO_FIELDS):
        return f"{machine} process on a CPU whose /proc/cpuinfo is x86 ({fields.get('model name', 'unknown')})"
    return None


def detect_emulation() -> str | None:
    """Why this process is emulated (qemu-user and the like), or None on real hardware."""
    try:
        with open("/proc/self/comm", encoding="utf-8", errors="replace") as f:
            comm = f.read()
    except OSError:
        comm = ""
    return emulation_from(machine=platform.machine(), cpuinfo=_read_cpuinfo(), comm=comm)


# --- NVIDIA GPUs ------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    """One NVIDIA GPU as nvidia-smi or the CUDA driver describes it."""

    index: int
    name: str
    compute_cap: str  # "9.0"
    uuid: str = ""
    memory_mib: int | None = None

    @property
    def arch(self) -> str:
        """``sm_90`` for compute capability 9.0."""
        major, _, minor = self.compute_cap.partition(".")
        return f"sm_{int(major)}{int(minor or 0)}"


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """GPUs from ``nvidia-smi --query-gpu=index,uuid,name,compute_cap,memory.total
    --format=csv,noheader,nounits``. Lines without a usable compute capability
    (``[N/A]``, or a driver that does not know the field) are skipped."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        index, uuid, name, cap = parts[0], parts[1], parts[2], parts[3]
        if not re.fullmatch(r"\d+\.\d+", cap):
            continue
        memory = parts[4] if len(parts) > 4 else ""
        gpus.append(
            GpuInfo(
                index=int(index),
                name=name,
                compute_cap=cap,
                uuid=uuid,
                memory_mib=int(float(memory)) if re.fullmatch(r"\d+(\.\d+)?", memory) else None,
            )
        )
    return gpus


def nvidia_smi_gpus(timeout_s: float = 20.0) -> list[GpuInfo]:
    """The GPUs nvidia-smi lists; [] without nvidia-smi or a driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(out.stdout) if out.returncode == 0 else []


def cuda_driver_gpus() -> list[GpuInfo]:
    """The GPUs the CUDA driver (``libcuda.so.1``) reports; [] without one."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return []
    if cuda.cuInit(0) != 0:
        return []
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    gpus = []
    for i in range(count.value):
        dev, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        name = ctypes.create_string_buffer(256)
        mem = ctypes.c_size_t(0)
        if cuda.cuDeviceGet(ctypes.byref(dev), i) != 0:
            continue
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # ..._MINOR
        cuda.cuDeviceGetName(name, 256, dev)
        cuda.cuDeviceTotalMem_v2(ctypes.byref(mem), dev)
        gpus.append(
            GpuInfo(
                index=i,
                name=name.value.decode(errors="replace"),
                compute_cap=f"{major.value}.{minor.value}",
                memory_mib=mem.value // (1 << 20) or None,
            )
        )
    return gpus


def detect_gpus() -> list[GpuInfo]:
    """NVIDIA GPUs on this machine: nvidia-smi first, the CUDA driver where it says nothing."""
    return nvidia_smi_gpus() or cuda_driver_gpus()


def cuda_target(compute_cap: str) -> dict[str, Any]:
    """The target for a GPU of compute capability ``"8.0"``: ``{"kind": "cuda", "arch": "sm_80", ...}``,
    with the per-block limits from the one table the service validates targets with."""
    from common.targets import cuda_limits

    arch = GpuInfo(index=0, name="", compute_cap=compute_cap).arch
    return {"kind": "cuda", "arch": arch, **cuda_limits(arch)}


# --- the CUDA compiler ---------------------------------------------------------------


@dataclass(frozen=True)
class CudaCompiler:
    """How CUDA source becomes a GPU binary on this machine: ``mode`` is what
    ``TVM_CUDA_COMPILE_MODE`` takes ("nvcc" -> fatbin, "nvrtc" -> cubin)."""

    mode: str
    detail: str

    @property
    def binary_format(self) -> str:
        return "fatbin" if self.mode == "nvcc" else "cubin"


NO_CUDA_COMPILER = (
    "no CUDA compiler: a CUDA build holds CUDA source, which must become a GPU binary on this "
    "machine. Install the CUDA toolkit (nvcc on PATH, or CUDA_PATH=/usr/local/cuda-XX) or NVRTC "
    "(pip install cuda-bindings nvidia-cuda-nvrtc, with CUDA_PATH for the headers)."
)


def find_nvcc() -> str | None:
    """nvcc on PATH, else under ``$CUDA_PATH``/``$CUDA_HOME`` or ``/usr/local/cuda*``."""
    exe = shutil.which("nvcc")
    if exe:
        return exe
    roots = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    try:
        roots += sorted((os.path.join("/usr/local", d) for d in os.listdir("/usr/local") if d.startswith("cuda-")), reverse=True)
    except OSError:
        pass
    for root in roots:
        if root and os.access(os.path.join(root, "bin", "nvcc"), os.X_OK):
            return os.path.join(root, "bin", "nvcc")
    return None


def _nvrtc_available() -> bool:
    try:
        from cuda.bindings import nvrtc  # type: ignore[import-not-found]  # noqa: F401
    except Exception:  # noqa: BLE001 - absent or broken alike
        return False
    return True


def find_cuda_compiler(prefer: str = "auto") -> CudaCompiler | None:
    """The CUDA compiler to use (``prefer``: auto, nvcc or nvrtc); None when there is none.

    ``auto`` takes nvcc when present (its fatbin is what TVM's own nvcc mode
    makes and needs no Python packages), else NVRTC.
    """
    if prefer not in ("auto", "nvcc", "nvrtc"):
        raise ValueError(f"Unknown CUDA compiler: {prefer} (expected auto, nvcc or nvrtc)")
    if prefer in ("auto", "nvcc"):
        nvcc = find_nvcc()
        if nvcc:
            return CudaCompiler("nvcc", nvcc)
    if prefer in ("auto", "nvrtc") and _nvrtc_available():
        return CudaCompiler("nvrtc", "cuda-bindings NVRTC")
    return None


# --- devices ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """One device a worker daemon serves: ``cpu`` or ``cuda:N``."""

    kind: str  # "cpu" | "cuda"
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


def parse_device(spec: str) -> Device:
    """``cpu``, ``cuda``, ``cuda:1`` (``gpu:1`` too) -> Device; ValueError otherwise."""
    text = spec.strip().lower()
    kind, _, index = text.partition(":")
    if kind == "cpu" and not index:
        return Device("cpu")
    if kind in ("cuda", "gpu") and (not index or index.isdigit()):
        return Device("cuda", int(index or 0))
    raise ValueError(f"Unknown device: {spec!r} (expected cpu, cuda or cuda:N)")


def _cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name; ARM kernels spell it differently from x86."""
    fields = parse_cpuinfo(cpuinfo if cpuinfo is not None else _read_cpuinfo())
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    if "CPU implementer" in fields:  # ARM without a name: implementer/part ids
        return f"ARM implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    return platform.processor() or "unknown"


def detect_hardware(gpu: GpuInfo | None = None) -> dict[str, Any]:
    """A free-form description sent at registration (shown to users, not keyed on).

    ``emulated`` (why) is present only under emulation; the daemon turns it into
    the registration's ``emulated`` flag.
    """
    import tvm

    hw: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": len(available_cores()),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "tvm": tvm.__version__,
    }
    if gpu is not None:
        hw["gpu"] = {
            "index": gpu.index,
            "name": gpu.name,
            "compute_cap": gpu.compute_cap,
            "uuid": gpu.uuid,
            "memory_mib": gpu.memory_mib,
        }
    emulated = detect_emulation()
    if emulated:
        hw["emulated"] = emulated
    return hw
