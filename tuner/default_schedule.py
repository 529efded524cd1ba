"""TVM's default schedules for fused functions that no tuned config covers, and the choice among them.

TVM 0.27's ``compile_relax`` schedules untuned functions only on GPU targets; on
CPU they stay the serial loops of ``LegalizeOps``. Default candidates for one
function (:func:`default_candidates`): MetaSchedule's own design space for the
target (multi-level tiling, auto-inline, parallel/vectorize/unroll), sampled
with fixed seeds so a compile is reproducible and finished by the postprocessors
a tuned candidate gets (``RewriteLayout`` included: the compile step packs the
weights, :func:`tuner.compile.prepack_weights`); then DLight's CPU rules (``GEMV``,
``Reduction``). :class:`Fallback` says how :func:`schedule_functions` picks:
``MEASURED`` times the tuned record, the defaults and the naive loops of each
function alone and keeps the fastest, so neither a bad tuned record nor a
default that loses to serial loops on a tiny kernel (thread start-up) survives.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tvm.ir import IRModule
    from tvm.target import Target

log = logging.getLogger(__name__)

SCHEDULED_ATTR = "tirx.is_scheduled"
_SEED = 0


def is_scheduled(func: Any) -> bool:
    """Whether a PrimFunc carries the ``tirx.is_scheduled`` mark (tuned or default-scheduled)."""
    attrs = getattr(func, "attrs", None)
    return bool(attrs is not None and SCHEDULED_ATTR in attrs and int(attrs[SCHEDULED_ATTR]) == 1)


def _design_space_schedule(func: Any, target: Target, seed: int) -> Any | None:
    """One deterministic sample of MetaSchedule's design space for ``func``, postprocessed; None if none."""
    from common.tvm_env import prepare_tvm

    prepare_tvm((str(target.kind.name),))  # else TuneContext imports every target's intrinsics (~50 s)
    import tvm
    from tvm.s_tir import meta_schedule as ms

    ctx = ms.TuneContext(
        mod=tvm.IRModule({"main": func}),
        target=target,
        space_generator="post-order-apply",
        num_threads=1,
        rand_state=seed,
    )
    for sch in ctx.generate_design_space():
        if all(p.apply(sch) for p in ctx.space_generator.postprocs):
            return sch
    return None


def _rules(target: Target) -> list[Any]:
    from tvm.s_tir import dlight as dl

    from tvm.relax import pipeline as relax_pipeline

    if relax_pipeline.BackendDispatcher.is_gpu_target(target):  # what compile_relax applies on GPUs
        return [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
    return [dl.cpu.GEMV(), dl.cpu.Reduction()]


def _dlight(func: Any, target: Target) -> Any | None:
    from tvm.s_tir.dlight.base.transform import _apply_rules

    try:
        spaces = _apply_rules(func, target, _rules(target), tunable=False)
    except Exception as exc:  # noqa: BLE001  (a DLight rule that throws on an odd function: try the next way)
        log.debug("DLight rules failed on a function: %s", exc)
        return None
    return spaces[0].mod["main"] if spaces else None


def _design_space(func: Any, target: Target, seed: int) -> Any | None:
    if target.kind.name != "llvm":
        return None
    try:
        sch = _design_space_schedule(func, target, seed)
    except Exception as exc:  # noqa: BLE001  (no design space for this function: leave it naive)
        log.warning("no default schedule for a function: %s", str(exc).strip().splitlines()[0][:200])
        return None
    return sch.mod["main"] if sch is not None else None


def default_candidates(func: Any, target: Target, seeds: int = 1) -> list[tuple[Any, str]]:
    """Default schedules for ``func``, best guess first: design-space samples (CPU), then DLight.

    On CPU the design space comes first: DLight's CPU ``Reduction`` rule also
    matches convolutions and scheduled a 3x3 conv 2.6x slower than naive loops.
    """
    out = [(f, "design-space") for f in (_design_space(func, target, _SEED + i) for i in range(seeds)) if f is not None]
    dlight = _dlight(func, target)
    if dlight is not None:
        out.append((dlight, "dlight"))
    return out


def time_function(func: Any, target: Target, number: int = 5, repeat: int = 3) -> float:
    """Median seconds of one call of ``func`` on random inputs (built alone for ``target``).

    Timed as it runs once deployed: a weight the schedule packs is passed packed
    (the compile step packs it once), as MetaSchedule's builder times candidates.
    """
    import numpy as np
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    lib = tvm.tirx.build(mod, target=target)
    dev = tvm.cpu(0) if target.kind.name == "llvm" else tvm.device(target.kind.name, 0)
    rng = np.random.default_rng(0)
    args = [
        tvm.runtime.tensor(rng.uniform(0, 1, [int(d) for d in a.shape]).astype(str(a.dtype)), dev)
        for a in ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    ]
    return float(lib.time_evaluator("main", dev, number=number, repeat=repeat, min_repeat_ms=5)(*args).median)


Timer = Callable[[Any, "Target"], float]


MARGIN = 1.25  # a less preferred schedule must be this much faster to be chosen (per-function timing is noisy)


def _fastest(options: list[tuple[Any, str]], target: Target, timer: Timer) -> tuple[Any, str]:
    """The preferred option (first) unless a later one times ``MARGIN`` times faster than the best so far."""
    best: tuple[float, Any, str] | None = None
    for func, kind in options:
        try:
            secs = timer(func, target)
        except Exception as exc:  # noqa: BLE001  (one that does not build or run is not chosen)
            log.warning("a %s schedule failed to build or run: %s", kind, str(exc).strip().splitlines()[0][:200])
            continue
        if best is None or secs * MARGIN < best[0]:
            best = (secs, func, kind)
    return (best[1], best[2]) if best is not None else options[0]


class Fallback(enum.Enum):
    """What a fused function without a usable tuned schedule gets at compile time."""

    NAIVE = "naive"  # TVM 0.27 compile_relax on CPU: LegalizeOps' serial loops
    DEFAULT = "default"  # the first default candidate (no timing)
    MEASURED = "measured"  # time tuned, defaults and naive alone; prefer in that order unless MARGIN faster


def schedule_functions(
    fused: IRModule,
    applied: IRModule,
    target: Target,
    mode: Fallback,
    counts: dict[str, int],
    timer: Timer = time_function,
) -> IRModule:
    """A copy of ``applied`` (``fused`` after the database lookup), each function's schedule chosen by ``mode``.

    ``counts`` is incremented per chosen kind: ``"tuned"``, ``"design-space"``,
    ``"dlight"`` or ``"naive"``. ``timer`` (seconds per call of a function) is
    what ``MEASURED`` compares.
    """
    from tvm import tirx

    applied = applied.clone()  # the caller's module stays as it was
    for gvar, func in list(applied.functions_items()):
        if not isinstance(func, tirx.PrimFunc):
            continue
        tuned = is_scheduled(func)
        if mode is Fallback.NAIVE or (tuned and mode is Fallback.DEFAULT):
            counts["tuned" if tuned else "naive"] = counts.get("tuned" if tuned else "naive", 0) + 1
            continue
        naive = fused[gvar.name_hint]
        options = [(func, "tuned")] if tuned else []
        options += default_candidates(naive, target, seeds=3 if mode is Fallback.MEASURED else 1)
        if mode is Fallback.MEASURED:
            options.append((naive, "naive"))
            chosen, kind = _fastest(options, target, timer)
        else:
            chosen, kind = options[0] if options else (naive, "naive")
        counts[kind] = counts.get(kind, 0) + 1
        applied[gvar] = chosen.with_attr(SCHEDULED_ATTR, True) if kind != "naive" else naive
    return applied
