"""What this machine is: the TVM target it serves and a hardware description.

The target is what measurements are keyed by, so it must name the real CPU:
``"mcpu": "native"`` silently falls back to a generic CPU in TVM 0.27
(TVM_NOTES §0), so we ask LLVM for the host CPU name instead.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from tunehub.targets import canonical_target


def available_cores() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def detect_cpu_target(num_cores: int | None = None) -> dict[str, Any]:
    """A TVM target JSON dict for this x86 or ARM CPU, validated by TVM.

    ``num_cores`` overrides the detected core count (e.g. to leave cores free
    for other work on the machine); it also sets the sandbox's thread count.
    """
    import tvm

    target: dict[str, Any] = {"kind": "llvm", "num-cores": int(num_cores or available_cores())}
    mcpu = str(tvm.target.codegen.llvm_get_system_cpu() or "")
    if mcpu and mcpu != "generic":
        target["mcpu"] = mcpu
    if platform.machine().lower() in ("aarch64", "arm64"):
        target["mtriple"] = "aarch64-linux-gnu"
        target["mattr"] = ["+neon"]
    canonical_target(target)  # raises BadInput with TVM's reason if LLVM disagrees
    return target


def _cpu_model() -> str:
    """The CPU's marketing name; ARM kernels spell it differently from x86."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
    except OSError:
        pass
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    if "CPU implementer" in fields:  # ARM without a name: implementer/part ids
        return f"ARM implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    return platform.processor() or "unknown"


def detect_hardware() -> dict[str, Any]:
    """A free-form description sent at registration (shown to users, not keyed on)."""
    import tvm

    return {
        "cpu": _cpu_model(),
        "cores": available_cores(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "tvm": tvm.__version__,
    }
