"""Weight packing on CPU: one task tuned twice, with and without its weights marked layout-free.

Same task, same seed, same trials, MetaSchedule's own ``tune_tir`` with a local
builder/runner, the two variants alternated task by task: the only difference
is the ``layout_free_buffers`` mark :func:`tuner.intake.fuse_for_tuning` now
attaches on CPU, which lets ``RewriteLayout`` tile each weight for its kernel
(the compile step packs it once, :func:`tuner.compile.prepack_weights`).
Reports each variant's best mean time and the ratio.

    python bench/weight_layout.py --cache /tmp/models --model resnet18_112 --trials 64 \\
        --tasks fused_conv2d1_add1_relu1,fused_conv2d6_add5_relu3,fused_conv2d7_add5,fused_matmul_add9 --seeds 1,2

Results: ``bench/results/weight_layout.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from model_zoo import ZOO, export_onnx  # noqa: E402


def tune_best_secs(func: Any, target: Any, trials: int, seed: int) -> tuple[float | None, float]:
    """(best mean seconds over ``trials`` of MetaSchedule's own search, wall seconds)."""
    import tvm
    from _ms_build import fast_build
    from tvm.s_tir import meta_schedule as ms

    mod = tvm.IRModule({"main": func})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work_dir:
        db = ms.tune_tir(mod, target, work_dir, max_trials_global=trials, num_trials_per_iter=16, seed=seed,
                         builder=ms.builder.LocalBuilder(max_workers=2, f_build=fast_build, timeout_sec=120),
                         runner=ms.runner.LocalRunner(timeout_sec=60))
        means = [sum(float(x) for x in r.run_secs) / len(r.run_secs) for r in db.get_all_tuning_records() if r.run_secs]
    valid = [m for m in means if m < 1e9]
    return (min(valid) if valid else None), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True, help="folder for the exported ONNX models")
    p.add_argument("--model", default="resnet18_112", choices=sorted(ZOO))
    p.add_argument("--tasks", required=True, help="comma-separated fused task names of the model")
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--seeds", default="1,2", help="comma-separated; one tuning per seed, task and variant")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "weight_layout.json")
    args = p.parse_args(argv)

    from workers.detect import detect_cpu_target

    # LocalBuilder's worker processes unpickle _ms_build.fast_build by reference
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "bench"), str(ROOT), os.environ.get("PYTHONPATH")]))
    target_json = detect_cpu_target()
    os.environ.setdefault("TVM_NUM_THREADS", str(target_json.get("num-cores", 1)))
    from tuner.intake import as_target, fuse_for_tuning, onnx_to_relax

    target = as_target(target_json)
    fused = fuse_for_tuning(onnx_to_relax(export_onnx(args.model, args.cache).read_bytes()), target)
    runs = []
    for seed in (int(x) for x in args.seeds.split(",")):
        rows = []
        for name in args.tasks.split(","):
            marked = fused[name]
            row: dict[str, Any] = {"task": name,
                                   "layout_free_buffers": [int(i) for i in marked.attrs["layout_free_buffers"]]}
            for label, func in (("plain", marked.without_attr("layout_free_buffers")), ("packed", marked)):
                best, wall = tune_best_secs(func, target, args.trials, seed)
                row[label] = {"best_ms": None if best is None else best * 1e3, "tune_s": round(wall, 1)}
                print(seed, name, label, row[label], flush=True)
            if row["plain"]["best_ms"] and row["packed"]["best_ms"]:
                row["speedup_packed_vs_plain"] = round(row["plain"]["best_ms"] / row["packed"]["best_ms"], 3)
            rows.append(row)
        runs.append({"seed": seed, "loadavg_after": list(os.getloadavg()), "tasks": rows})
    result = {"what": "one task tuned by MetaSchedule's tune_tir with and without the layout-free weight mark; "
                      "same trials, per seed", "model": args.model, "trials": args.trials, "target": target_json,
              "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
