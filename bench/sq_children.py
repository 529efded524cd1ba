"""The fresh child processes of search_quality: time one variant, or run ``ms.tune_tir``; each prints one JSON line.

Run as ``python bench/search_quality.py _time ...`` / ``_ms_tune ...`` so no
TVM thread pool or cache state carries over between measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from sq_suite import TIMING, random_inputs, workload


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``_time`` and ``_ms_tune`` subcommands."""
    t = sub.add_parser("_time")
    t.add_argument("--workload", required=True)
    t.add_argument("--target", required=True)
    t.add_argument("--variant", choices=("tuned", "untuned", "numpy"), required=True)
    t.add_argument("--trace")
    m = sub.add_parser("_ms_tune")
    m.add_argument("--workload", required=True)
    m.add_argument("--target", required=True)
    m.add_argument("--trials", type=int, required=True)
    m.add_argument("--per-batch", type=int, required=True)
    m.add_argument("--workdir", required=True)
    m.add_argument("--seed", type=int, default=0)


def _numpy_secs(name: str, arrays: list) -> float | None:  # type: ignore[type-arg]
    """Median of 7 repeats of ≥ 200 ms of the numpy/OpenBLAS equivalent; None where there is none."""
    import numpy as np

    a, b = arrays[0], arrays[1]
    if name.endswith("_fp16"):
        a, b = a.astype("float32"), b.astype("float32")  # OpenBLAS sgemm on the same shape
    if name.startswith("dense_bias_relu"):
        fn = lambda: np.maximum(a @ b.T + arrays[2], 0)  # noqa: E731
    elif name.startswith(("matmul", "batch_matmul")):
        fn = lambda: np.matmul(a, b)  # noqa: E731
    else:
        return None
    fn()
    runs = []
    for _ in range(7):
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < 0.2:
            fn()
            n += 1
        runs.append((time.perf_counter() - t0) / n)
    return statistics.median(runs)


def child_time(args: argparse.Namespace) -> None:
    """Time one variant of a workload (tuned trace, untuned build, numpy); prints {"secs": median}."""
    os.environ.setdefault("TVM_NUM_THREADS", "2")
    from common.tvm_env import prepare_tvm

    prepare_tvm(("llvm",), num_threads=2)
    import tvm

    mod, _ = workload(args.workload)
    arrays = random_inputs(mod)
    if args.variant == "numpy":
        print(json.dumps({"secs": _numpy_secs(args.workload, arrays)}))
        return
    target = tvm.target.Target(json.loads(args.target))
    if args.variant == "untuned":
        lib = tvm.tirx.build(mod, target=target)
        number, repeat, min_ms = 1, 3, 0
    else:
        from common.tvm_json import apply_trace

        lib = tvm.tirx.build(apply_trace(mod, Path(args.trace).read_text()).mod, target=target)
        number, repeat, min_ms = 1, 7, 200
    dev = tvm.cpu()
    tensors = [tvm.runtime.tensor(x, dev) for x in arrays]
    lib["main"](*tensors)  # warm-up
    secs = lib.time_evaluator("main", dev, number=number, repeat=repeat, min_repeat_ms=min_ms)(*tensors).results
    print(json.dumps({"secs": statistics.median(secs)}))


def child_ms_tune(args: argparse.Namespace) -> None:
    """``ms.tune_tir`` as a TVM user runs it; prints wall time, timeline and the best trace."""
    from common.tvm_env import prepare_tvm

    prepare_tvm(("llvm",), num_threads=2)
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    from _ms_build import fast_build
    from common.tvm_json import trace_to_json

    mod, _ = workload(args.workload)
    target = tvm.target.Target(json.loads(args.target))
    timeline: list[tuple[float, int, float | None]] = []
    best: list[float | None] = [None]
    trials = [0]

    @derived_object
    class Timeline(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):  # type: ignore[no-untyped-def]
            for r in runner_results:
                trials[0] += 1
                if r.run_secs:
                    m = sum(float(s) for s in r.run_secs) / len(r.run_secs)
                    best[0] = m if best[0] is None else min(best[0], m)
                timeline.append((time.monotonic() - start, trials[0], best[0]))

    start = time.monotonic()
    db = ms.tune_tir(
        mod, target, args.workdir, max_trials_global=args.trials, num_trials_per_iter=args.per_batch,
        builder=ms.builder.LocalBuilder(max_workers=2, f_build=fast_build),
        runner=ms.runner.LocalRunner(evaluator_config=ms.runner.EvaluatorConfig(**TIMING)),
        measure_callbacks=ms.measure_callback.MeasureCallback.create("default") + [Timeline()],
        num_tuning_cores=2, seed=args.seed,
    )
    wall = time.monotonic() - start
    top = db.get_top_k(db.commit_workload(mod), 1)
    print(json.dumps({"wall_s": wall, "timeline": timeline,
                      "best_secs": best[0], "best_trace": trace_to_json(top[0].trace) if top else None}))


def run_child(args: argparse.Namespace) -> bool:
    """Run the child subcommand ``args.cmd`` names; False when it names none."""
    if args.cmd == "_time":
        child_time(args)
    elif args.cmd == "_ms_tune":
        child_ms_tune(args)
    else:
        return False
    return True
