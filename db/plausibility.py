"""Is a reported run time believable? Checked before a result counts (``db.queue.complete``).

A valid-looking time is refused (stored as an error of kind ``rejected``) when:

- it is TVM's failed-run stub (``1e10`` s, see ``db.ranking.FAILED_STUB_SECS``);
- the worker says the output was not compared with the untuned build's
  (``output_checked`` false): a fast wrong kernel must never win;
- it is faster than the workload's FLOPs allow at the target's peak: a
  kernel doing ``flops`` operations cannot finish before ``flops / peak``.

The peak is deliberately generous (a floor that only catches the impossible,
never a slow honest machine): ``Settings.peak_gflops`` by target key or kind
when set, else for CPUs the cores times ``peak_gflops_per_core``, for CUDA a
per-architecture table with headroom, and for other kinds a very high default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.protocol import MeasurementOutcome
from db.ranking import FAILED_STUB_SECS

# Peak GFLOP/s per CUDA compute capability, about twice the densest tensor-core figure of its fastest part.
_CUDA_PEAK_GFLOPS = {7: 250_000.0, 8: 700_000.0, 9: 4_000_000.0, 10: 10_000_000.0}
_UNKNOWN_PEAK_GFLOPS = 20_000_000.0
# A CPU target that does not say its cores is assumed to have this many (large on purpose).
_DEFAULT_CPU_CORES = 512
_CPU_KINDS = ("llvm", "c")


@dataclass(frozen=True)
class PeakPolicy:
    """How the peak of a target is found (``Settings``' trust fields)."""

    per_core_gflops: float = 1000.0
    overrides: Mapping[str, float] = field(default_factory=dict)  # target key or kind -> GFLOP/s


def peak_flops(target: Mapping[str, Any], target_key: str, policy: PeakPolicy) -> float:
    """The highest FLOP/s any machine serving ``target`` could reach, for the plausibility floor."""
    kind = str(target.get("kind", ""))
    for name in (target_key, kind):
        if name in policy.overrides:
            return float(policy.overrides[name]) * 1e9
    if kind in _CPU_KINDS:
        cores = target.get("num-cores")
        cores = int(cores) if isinstance(cores, int) and cores > 0 else _DEFAULT_CPU_CORES
        return cores * policy.per_core_gflops * 1e9
    if kind == "cuda":
        arch = str(target.get("arch", ""))
        digits = arch.removeprefix("sm_")[:-1] if arch.startswith("sm_") else ""
        major = int(digits) if digits.isdigit() else None
        return (_CUDA_PEAK_GFLOPS.get(major, _UNKNOWN_PEAK_GFLOPS) if major else _UNKNOWN_PEAK_GFLOPS) * 1e9
    return _UNKNOWN_PEAK_GFLOPS * 1e9


def rejection(outcome: MeasurementOutcome, *, flops: float | None, peak: float | None) -> str | None:
    """Why a result with run times must not count, or None when it is plausible.

    ``outcome.run_secs`` is already known to be positive finite seconds.
    """
    secs = outcome.run_secs or []
    if any(s >= FAILED_STUB_SECS for s in secs):
        return f"run_secs {max(secs):g} is TVM's failed-run stub, not a measurement"
    if not outcome.output_checked:
        return "the output was not checked against the untuned build; an unchecked time does not count"
    if flops and peak and math.isfinite(flops) and flops > 0:
        floor = flops / peak
        if min(secs) < floor:
            return (
                f"run_secs {min(secs):.3g} s is faster than {flops:.3g} FLOPs allow at the target's peak "
                f"{peak / 1e9:.3g} GFLOP/s (at least {floor:.3g} s)"
            )
    return None
