"""Measurement noise: the same kernel measured 20 times, with and without the worker's settings.

    python bench/measurement_noise.py [--measurements 20] [--size 256] [--noise 0,0.3]

One fixed kernel (a real MetaSchedule candidate for an N³ fp32 matmul, seed 0)
is measured ``--measurements`` times through the worker's real measuring path
(``workers.measure.Measurer``: builder sandbox, runner sandbox, reference
check, ``time_evaluator``) under each configuration below. The configurations
take turns, one measurement each, so whatever else the machine does hits all
of them alike: side by side in one run.

| config | what it is |
|---|---|
| plain | MetaSchedule's LocalRunner defaults: number=3, repeat=1, min_repeat_ms=100; no warm-up, no cache flush, threads not pinned, no calibration |
| pinned | plain + one TVM thread pinned to each core (the runner's ``--cpus``) |
| trusted | pinned + warm-up 1, repeat 5, min_repeat_ms 20, CPU cache flush before each repeat (the worker's defaults), calibration before every measurement and the interference flag |
| trusted, unflagged | trusted without the measurements its calibration flagged |

Each measurement's value is the mean of its repeats (``mean_secs``, what the
service ranks by). Reported per configuration: mean, coefficient of variation
(std/mean) over the measurements, min/max ratio, measurements flagged, and the
CV's ratio to plain. Each ``--noise`` value is one scenario: F > 0 runs a CPU
hog on one core for a random fraction F of the time (bursts of 50-500 ms) to
emulate a shared lab machine; 0 measures the machine as it is. "others' CPU
share" is how much of the runner's cores other processes took while it timed
(the worker's interference signal). Written:
``bench/results/measurement_noise.json``; printed: a markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

RESULTS = ROOT / "bench" / "results" / "measurement_noise.json"


def _hog(stop: Any, duty: float, seed: int) -> None:
    """Burn one core in random bursts for about ``duty`` of the time."""
    rng = random.Random(seed)
    while not stop.is_set():
        burst = rng.uniform(0.05, 0.5)
        end = time.monotonic() + burst
        while time.monotonic() < end:
            pass
        time.sleep(burst * (1 - duty) / max(duty, 1e-3))


def fixed_candidate(n: int) -> tuple[str, str, str]:
    """(workload hash, mod_json, trace) of one MetaSchedule candidate, seed 0."""
    from tvm_helpers import matmul_workload, real_candidates

    from common.tvm_json import workload_hash, workload_to_json

    mod = matmul_workload(n)
    return workload_hash(mod), workload_to_json(mod), real_candidates(n, 1, seed=0)[0]


def configs(cores: list[int]) -> dict[str, dict[str, Any]]:
    from workers.timing import Timing

    plain = Timing(number=3, repeat=1, min_repeat_ms=100, warmup=0, cache_flush=False)
    trusted = Timing(number=1, repeat=5, min_repeat_ms=20, warmup=1, cache_flush=True)
    off = float("inf")  # plain and pinned flag nothing
    return {
        "plain": {"timing": plain, "cpus": None, "calibrate_every_s": 0.0, "interference_tolerance": off},
        "pinned": {"timing": plain, "cpus": cores, "calibrate_every_s": 0.0, "interference_tolerance": off},
        "trusted": {"timing": trusted, "cpus": cores, "calibrate_every_s": 1e-6, "interference_tolerance": 0.2},
    }


def run(measurements: int, n: int, noise: float) -> dict[str, Any]:
    from workers.detect import available_cores
    from workers.measure import Item, Measurer
    from workers.options import WorkerOptions

    cores = available_cores()
    target = {"kind": "llvm", "num-cores": len(cores)}
    whash, mod_json, trace = fixed_candidate(n)
    measurers: dict[str, Measurer] = {}
    for name, cfg in configs(cores).items():
        options = WorkerOptions(build_workers=1, timing=cfg["timing"], calibrate_every_s=cfg["calibrate_every_s"],
                                interference_tolerance=cfg["interference_tolerance"])
        m = Measurer(target, options, cpus=cfg["cpus"], num_threads=len(cores))
        m.start()
        measurers[name] = m
    stop = multiprocessing.Event()
    hog = None
    if noise > 0:
        hog = multiprocessing.Process(target=_hog, args=(stop, noise, 0), daemon=True)
        hog.start()
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in measurers}
    try:
        for i in range(measurements):
            for name, m in measurers.items():
                got: list[Any] = []
                started = time.monotonic()
                m.measure([Item(i, whash, mod_json, trace)], lambda rs: got.extend(rs) or True)
                r = got[0]
                if r.error:
                    raise RuntimeError(f"{name}: {r.error}")
                samples[name].append(
                    {
                        "mean_s": statistics.fmean(r.run_secs),
                        "run_secs": r.run_secs,
                        "flagged": r.flagged,
                        "others_busy": m.others_busy.get(i),
                        "wall_s": time.monotonic() - started,
                        "calibration": m.calibration.model_dump() if m.calibration else None,
                    }
                )
    finally:
        stop.set()
        if hog is not None:
            hog.join(timeout=5)
        for m in measurers.values():
            m.close()
    rows = {name: summarize(s) for name, s in samples.items()}
    rows["trusted, unflagged"] = summarize([s for s in samples["trusted"] if not s["flagged"]])
    base = rows["plain"]["cv"]
    for row in rows.values():
        row["cv_vs_plain"] = (row["cv"] / base) if base and row["cv"] is not None else None
    return {
        "bench": "measurement_noise",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": cores, "python": platform.python_version()},
        "kernel": f"{n}x{n}x{n} fp32 matmul, MetaSchedule candidate seed 0",
        "measurements": measurements,
        "noise_duty": noise,
        "rows": rows,
        "samples": samples,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    values = [s["mean_s"] for s in samples]
    if len(values) < 2:
        return {"n": len(values), "mean_us": None, "cv": None, "max_over_min": None, "flagged": 0, "wall_s": None}
    mean = statistics.fmean(values)
    busy = [s["others_busy"] for s in samples if s.get("others_busy") is not None]
    return {
        "others_busy": statistics.fmean(busy) if busy else None,
        "n": len(values),
        "mean_us": mean * 1e6,
        "cv": statistics.stdev(values) / mean,
        "max_over_min": max(values) / min(values),
        "flagged": sum(1 for s in samples if s["flagged"]),
        "wall_s": statistics.fmean(s["wall_s"] for s in samples),
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"Measurement noise, {result['kernel']}, {result['measurements']} measurements per config, "
        f"background noise duty {result['noise_duty']:.0%}, cores {result['machine']['cores']}",
        "",
        "| config | n | mean (µs) | CV | max/min | flagged | CV vs plain | others' CPU share | s per measurement |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["rows"].items():
        if r["cv"] is None:
            lines.append(f"| {name} | {r['n']} | - | - | - | - | - | - | - |")
            continue
        ratio = f"{r['cv_vs_plain']:.2f}×" if r["cv_vs_plain"] is not None else "-"
        busy = f"{r['others_busy']:.0%}" if r.get("others_busy") is not None else "-"
        lines.append(
            f"| {name} | {r['n']} | {r['mean_us']:.1f} | {r['cv'] * 100:.2f} % | {r['max_over_min']:.3f} | "
            f"{r['flagged']} | {ratio} | {busy} | {r['wall_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measurements", type=int, default=20)
    parser.add_argument("--size", type=int, default=256, help="matmul size N (N³)")
    parser.add_argument(
        "--noise", default="0,0.3", help="background CPU hog duty cycles, one scenario each (0: the machine as it is)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    scenarios = [run(args.measurements, args.size, float(n)) for n in args.noise.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"bench": "measurement_noise", "scenarios": scenarios}, indent=1))
    for result in scenarios:
        print(table(result) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
