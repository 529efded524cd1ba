"""A task's latency before it is measured: ``estimate_latency`` (a roofline at a per-target guess).

The scheduler needs every task's part of the model's time from the start: to
give a task under ~1 % of the model a one-trial first batch, and to weigh a
task whose candidates have all failed so far by what it is likely worth rather
than as infinitely promising. Without a measurement the best guess is a
roofline: the larger of compute time (FLOPs at the target's throughput) and
memory time (the bytes of its arguments at the target's bandwidth), plus a
launch floor. The throughputs are rough per-kind guesses; the scheduler
rescales every estimate by how measured tasks compare with theirs, so only the
ratios between tasks need to be right.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.workload_facts import argument_bytes

_GPU_KINDS = frozenset({"cuda", "rocm", "metal", "vulkan", "opencl", "webgpu"})


@dataclass(frozen=True)
class Throughput:
    """What one call of a kernel can expect of a target: FLOP/s, bytes/s, and a fixed cost per call."""

    flops_per_s: float
    bytes_per_s: float
    floor_s: float


def throughput(target: Mapping[str, Any]) -> Throughput:
    """A rough guess per target kind: a tuned CPU kernel does ~10 GFLOP/s and ~8 GB/s per core."""
    if str(target.get("kind")) in _GPU_KINDS:
        return Throughput(flops_per_s=5e12, bytes_per_s=4e11, floor_s=5e-6)
    cores = max(1, int(target.get("num-cores") or 1))
    return Throughput(flops_per_s=10e9 * cores, bytes_per_s=min(8e9 * cores, 40e9), floor_s=1e-6)


def estimate_latency(*, flops: float | None, args_info_json: str, target: Mapping[str, Any]) -> float:
    """Seconds one call of the workload is expected to take on ``target`` (never zero)."""
    tp = throughput(target)
    try:
        nbytes = argument_bytes(args_info_json)
    except (ValueError, TypeError):  # an ArgInfo we cannot read: FLOPs alone
        nbytes = 0
    compute = (flops or 0.0) / tp.flops_per_s
    memory = nbytes / tp.bytes_per_s
    return max(compute, memory) + tp.floor_s
