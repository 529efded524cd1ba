"""How candidates are timed: the settings, the timed loop, CPU pinning and the interference gauge."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

CACHE_FLUSH = "cache_flush_cpu_non_first_arg"


@dataclass(frozen=True)
class Timing:
    """How one candidate is timed (all repeats are reported).

    ``number``/``repeat``/``min_repeat_ms`` are TVM's ``time_evaluator``
    settings; ``warmup`` untimed calls come first; ``cache_flush`` flushes CPU
    caches before each repeat (CPU targets only; with it ``number`` should stay
    1 and ``min_repeat_ms`` small, or the flush is amortised away).
    """

    number: int = 1
    repeat: int = 5
    min_repeat_ms: int = 20
    warmup: int = 1
    cache_flush: bool = True

    def fields(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "repeat": self.repeat,
            "min_repeat_ms": self.min_repeat_ms,
            "warmup": self.warmup,
            "cache_flush": self.cache_flush,
        }


class CpuLoad:
    """How busy *other* processes kept this process's CPUs during a window.

    ``others`` = (busy time of the CPUs we may run on, from /proc/stat, steal
    included) minus our own CPU time, over the window's capacity. A timing run
    that shared its cores (another job, a noisy VM neighbour) shows here at
    once, where the periodic calibration would see it only by chance.
    None where /proc/stat cannot be read.
    """

    def __init__(self, cpus: list[int] | None = None) -> None:
        self.cpus = list(cpus or [])
        if not self.cpus:
            try:
                self.cpus = sorted(os.sched_getaffinity(0))
            except (AttributeError, OSError):
                pass
        self.others: float | None = None

    def _busy_ticks(self) -> int | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                lines = f.readlines()
        except OSError:
            return None
        wanted = {f"cpu{c}" for c in self.cpus}
        total = 0
        for line in lines:
            parts = line.split()
            if parts and parts[0] in wanted:
                v = [int(x) for x in parts[1:9]]  # user nice system idle iowait irq softirq steal
                total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
        return total

    def __enter__(self) -> CpuLoad:
        self._ticks = self._busy_ticks()
        self._own = time.process_time()
        self._wall = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        ticks = self._busy_ticks()
        wall = time.monotonic() - self._wall
        if ticks is None or self._ticks is None or not self.cpus or wall <= 0:
            return
        busy = (ticks - self._ticks) / os.sysconf("SC_CLK_TCK")
        own = time.process_time() - self._own
        self.others = round(max(0.0, busy - own) / (wall * len(self.cpus)), 4)


def time_it(rt_mod: Any, entry: str, dev: Any, tensors: list[Any], timing: dict[str, Any]) -> list[float]:
    """All repeats of ``entry`` on ``tensors``, in seconds, after ``warmup`` untimed calls.

    With ``cache_flush`` on a CPU device every repeat starts with cold caches
    for all arguments but the first (TVM's ``cache_flush_cpu_non_first_arg``,
    as MetaSchedule's runner offers): the kernel is timed as it runs inside a
    model, where the previous operator has just evicted its inputs.
    """
    func = rt_mod[entry]
    for _ in range(int(timing.get("warmup", 0))):
        func(*tensors)
    dev.sync()
    flush = bool(timing.get("cache_flush")) and dev.dlpack_device_type() == 1  # kDLCPU
    timer = rt_mod.time_evaluator(
        entry,
        dev,
        number=int(timing.get("number", 3)),
        repeat=int(timing.get("repeat", 1)),
        min_repeat_ms=int(timing.get("min_repeat_ms", 100)),
        f_preproc=CACHE_FLUSH if flush else "",
    )
    return [float(s) for s in timer(*tensors).results]


def pin_threads(cpus: list[int]) -> None:
    """One TVM thread per CPU in ``cpus``, each bound to its own.

    TVM binds its worker threads itself but resets the main thread (worker 0)
    to every CPU it was given, so the main thread is pinned after it.
    """
    import tvm_ffi

    os.sched_setaffinity(0, set(cpus))
    k_specify_one_core_per_thread = -2  # TVM's ThreadGroup::AffinityMode
    tvm_ffi.get_global_func("runtime.config_threadpool")(k_specify_one_core_per_thread, len(cpus), [str(c) for c in cpus])
    os.sched_setaffinity(0, {cpus[0]})
