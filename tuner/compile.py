"""Compile an ONNX model with (or without) tuned configs, run it and time it.

The pipeline is ``ms.relax_integration.compile_relax``'s (TVM's fusion passes,
then ``MetaScheduleApplyDatabase`` swaps in the tuned schedule of each fused
function found in the database), with CPU weights packed at compile time for the
kernels that tiled them (:func:`prepack_weights`), plus a CPU fallback that TVM 0.27 lacks: there
``compile_relax`` schedules leftovers only for GPU targets, so on CPU a function
missing from the database stayed plain serial loops (no parallel, no vectorize,
no tiling). Here a function without a valid tuned record gets a default
schedule (:mod:`tuner.default_schedule`; ``fallback`` picks how: ``NAIVE`` is
the old behaviour, ``DEFAULT`` a deterministic MetaSchedule design-space sample,
``MEASURED`` the fastest of tuned/default/naive timed function by function).
With no configs the database is an empty ``MemoryDatabase``: the **untuned
baseline**.

The command line for it is ``tunehub compile`` (``--json`` for one JSON line).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import BadInput, TunehubError
from tuner.default_schedule import Fallback
from tuner.intake import InputShapes

if TYPE_CHECKING:
    import numpy as np
    from tvm.relax import VMExecutable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompiledModel:
    """A compiled model and how much of it the configs covered."""

    exe: VMExecutable
    input_shapes: dict[str, list[int]]
    input_dtypes: dict[str, str]
    functions_total: int  # fused TIR functions compile_relax looked up
    functions_tuned: int  # of those, found in the database
    schedules: dict[str, int]  # functions per chosen schedule: tuned, design-space, dlight, naive
    compile_secs: float


def _num_cores(target: Mapping[str, Any]) -> int | None:
    value = target.get("num-cores") if isinstance(target, Mapping) else None
    try:
        return int(value) if value else None
    except (TypeError, ValueError):
        return None


def set_num_threads(target: Mapping[str, Any]) -> int | None:
    """Point ``TVM_NUM_THREADS`` at the target's ``num-cores``.

    TVM reads it when its thread pool starts (the first parallel kernel), and
    used 1 thread on a 2-core box when unset (TVM_NOTES §0). Returns the count set.
    """
    cores = _num_cores(target)
    if cores:
        os.environ["TVM_NUM_THREADS"] = str(cores)
    return cores


def _open_database(config_dir: Path | None) -> Any:
    from tvm.s_tir import meta_schedule as ms

    if config_dir is None:
        return ms.database.MemoryDatabase()
    config_dir = Path(config_dir)
    missing = [n for n in ("database_workload.json", "database_tuning_record.json") if not (config_dir / n).is_file()]
    if missing:
        raise BadInput(f"{config_dir} is not a MetaSchedule JSONDatabase folder: {', '.join(missing)} missing")
    try:
        return ms.database.JSONDatabase(work_dir=str(config_dir), allow_missing=False)
    except Exception as exc:  # noqa: BLE001  (a damaged file: TVM says which line)
        raise BadInput(f"cannot load the configs in {config_dir}: {str(exc).strip()[:2000]}") from None


def _counting_database(inner: Any) -> Any:
    """Wrap a database so we learn which functions ``compile_relax`` looked up and found."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class CountingDatabase(ms.database.PyDatabase):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner
            self.queried = 0
            self.found = 0

        def has_workload(self, mod: Any) -> bool:
            self.queried += 1
            return bool(self.inner.has_workload(mod))

        def commit_workload(self, mod: Any) -> Any:
            return self.inner.commit_workload(mod)

        def commit_tuning_record(self, record: Any) -> None:
            self.inner.commit_tuning_record(record)

        def get_top_k(self, workload: Any, top_k: int) -> list[Any]:
            records = list(self.inner.get_top_k(workload, top_k))
            if records:
                self.found += 1
            return records

        def get_all_tuning_records(self) -> list[Any]:
            return list(self.inner.get_all_tuning_records())

        def __len__(self) -> int:
            return len(self.inner)

    return CountingDatabase(inner)


def prepack_weights(mod: Any) -> Any:
    """Pack each layout-rewritten weight once, at compile time.

    A tuned CPU kernel may read a weight in a tiled layout of its own
    (MetaSchedule's ``RewriteLayout``, enabled by the mark
    :func:`tuner.intake.fuse_for_tuning` attaches). ``SplitLayoutRewritePreproc``
    moves the packing out of the kernel into a function of its own, and because
    the model's weights are constants, ``FoldConstant`` runs it here: the
    deployed model carries packed weights and the kernel never repacks them.
    The kernel is renamed ``<name>_prepacked``.
    """
    import tvm
    from tvm import relax

    passes = [relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant(),
              relax.transform.DeadCodeElimination()]  # the packing functions, now run, are unused
    return tvm.transform.Sequential(passes)(mod)


def build_relax(database: Any, mod: Any, target: Any, fallback: Fallback, counts: dict[str, int]) -> Any:
    """Build a Relax module with ``database``'s tuned schedules, the ``fallback`` for the rest, weights packed.

    Fusion (:func:`tuner.intake.fuse_for_tuning`), ``MetaScheduleApplyDatabase``,
    the default-schedule fallback, :func:`prepack_weights`, then TVM's lowering
    passes for the target. ``counts`` gets the schedules chosen per kind.
    """
    import tvm
    from tvm import relax
    from tvm.relax import pipeline as relax_pipeline
    from tvm.relax.transform import MetaScheduleApplyDatabase

    from tuner.default_schedule import schedule_functions
    from tuner.intake import fuse_for_tuning

    try:
        lower = list(relax_pipeline.dataflow_lower_passes(target)) + list(relax_pipeline.finalize_passes(target))
    except (ValueError, AttributeError):  # a target the dispatcher does not know: the CPU lists
        from tvm.relax.backend.cpu_generic import pipeline as cpu

        lower = cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)

    @tvm.transform.module_pass(opt_level=3, name="TunehubCompilePipeline")
    def _pipeline(mod: Any, _ctx: Any) -> Any:
        fused = fuse_for_tuning(mod, target)
        applied = MetaScheduleApplyDatabase(enable_warning=False)(fused)
        mod = prepack_weights(schedule_functions(fused, applied, target, fallback, counts))
        return tvm.transform.Sequential(lower)(mod)

    with target, database, tvm.transform.PassContext(opt_level=3):
        return relax.build(mod, target=target, relax_pipeline=_pipeline)


def compile_model_stats(
    content: bytes,
    input_shapes: InputShapes | None,
    target: Mapping[str, Any],
    config_dir: Path | None,
    *,
    fallback: Fallback = Fallback.DEFAULT,
) -> CompiledModel:
    """:func:`compile_model`, plus the model's inputs and how the functions were scheduled."""
    from common.tvm_env import prepare_tvm
    from tuner import intake

    tgt = intake.as_target(target)
    prepare_tvm((str(tgt.kind.name),))  # tuned traces may tensorize with the target's intrinsics

    inputs, mod = intake.convert_onnx(content, input_shapes)
    database = _counting_database(_open_database(config_dir))
    counts: dict[str, int] = {}
    start = time.perf_counter()
    try:
        exe = build_relax(database, mod, tgt, fallback, counts)
    except Exception as exc:  # noqa: BLE001
        raise TunehubError(f"TVM failed to compile the model: {str(exc).strip()[:2000]}") from None
    return CompiledModel(
        exe=exe,
        input_shapes=inputs.shapes,
        input_dtypes=inputs.dtypes,
        functions_total=database.queried,
        functions_tuned=database.found,
        schedules=dict(counts),
        compile_secs=time.perf_counter() - start,
    )


def compile_model(
    content: bytes,
    input_shapes: InputShapes | None,
    target: Mapping[str, Any],
    config_dir: Path | None,
    *,
    fallback: Fallback = Fallback.DEFAULT,
) -> VMExecutable:
    """Compile an ONNX model for ``target`` with the JSONDatabase in ``config_dir``.

    ``config_dir=None`` gives the untuned baseline (see the module docstring);
    ``fallback`` says what functions without a tuned record get (:class:`Fallback`).
    Raises BadInput for a bad model, target or config folder.
    """
    return compile_model_stats(content, input_shapes, target, config_dir, fallback=fallback).exe


def _device(target: Mapping[str, Any] | None) -> Any:
    import tvm

    kind = str((target or {}).get("kind", "llvm"))
    return tvm.cpu(0) if kind in ("llvm", "c") else tvm.device(kind, 0)


def random_inputs(
    input_shapes: Mapping[str, Sequence[int]], input_dtypes: Mapping[str, str], seed: int = 0
) -> list[np.ndarray]:
    """Deterministic random inputs in the model's input order (floats in [-1, 1), ints in [0, 10))."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = []
    for name, shape in input_shapes.items():
        dtype = input_dtypes.get(name, "float32")
        if dtype == "bool":
            arrays.append(rng.integers(0, 2, size=shape).astype(bool))
        elif dtype == "bfloat16":
            import ml_dtypes

            arrays.append(rng.uniform(-1, 1, size=shape).astype(ml_dtypes.bfloat16))
        elif np.issubdtype(np.dtype(dtype), np.integer):
            arrays.append(rng.integers(0, 10, size=shape).astype(dtype))
        else:
            arrays.append(rng.uniform(-1, 1, size=shape).astype(dtype))
    return arrays


def _flatten(value: Any) -> list[np.ndarray]:
    if hasattr(value, "numpy"):
        return [value.numpy()]
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and hasattr(value, "__getitem__")):
        return [array for item in value for array in _flatten(item)]
    raise TypeError(f"unexpected VM output {type(value).__name__}")


def run_outputs(exe: VMExecutable, inputs: Sequence[np.ndarray], target: Mapping[str, Any] | None = None) -> list[np.ndarray]:
    """Run ``main`` once on ``inputs`` (numpy arrays in the model's input order); outputs flattened."""
    import tvm
    from tvm import relax

    dev = _device(target)
    vm = relax.VirtualMachine(exe, dev)
    result = vm["main"](*[tvm.runtime.tensor(a, dev) for a in inputs])
    return _flatten(result)


def measure_latency(
    exe: VMExecutable,
    input_shapes: Mapping[str, Sequence[int]],
    input_dtypes: Mapping[str, str],
    target: Mapping[str, Any],
    repeat: int = 10,
    min_repeat_ms: int = 50,
) -> dict[str, Any]:
    """Time ``main`` on random inputs: ``repeat`` samples, each at least ``min_repeat_ms`` long.

    Returns ``{"median_ms", "mean_ms", "min_ms", "runs_ms", "num_threads"}``; each
    run is the mean of the calls in one sample (TVM's ``time_evaluator``, after a
    warm-up call). Sets ``TVM_NUM_THREADS`` from the target first, which only
    takes effect if no TVM kernel has run in this process yet; ``num_threads``
    is the count the runtime actually used (time in a fresh process, as
    ``tunehub compile --json`` does, to be sure).
    """
    import statistics

    import tvm
    from tvm import relax

    threads = set_num_threads(target)
    dev = _device(target)
    vm = relax.VirtualMachine(exe, dev)
    args = [tvm.runtime.tensor(a, dev) for a in random_inputs(input_shapes, input_dtypes)]
    timer = vm.time_evaluator("main", dev, number=1, repeat=max(1, int(repeat)), min_repeat_ms=min_repeat_ms)
    runs_ms = [float(s) * 1e3 for s in timer(*args).results]
    actual = int(tvm.runtime.num_threads())
    if threads and actual != threads:
        log.warning("timed with %d TVM threads, not the target's %d: the thread pool started earlier", actual, threads)
    return {
        "median_ms": statistics.median(runs_ms),
        "mean_ms": statistics.fmean(runs_ms),
        "min_ms": min(runs_ms),
        "runs_ms": runs_ms,
        "num_threads": actual,
    }
