"""Search quality: tunehub (service + one local worker) beside MetaSchedule's ``tune_tir`` run locally.

    python bench/search_quality.py [--quick] [--only matmul512 ...] [--out bench/results/search_quality.json]

Measured in one run, on this machine:

1. Per suite workload, the same trial budget: tunehub (``tunehub serve`` with its
   tuner and ``tunehub worker``, SQLite, one shared database for the suite, as a
   team runs it: a workload whose operator the suite tuned before at another
   shape or dtype — matmul1024 and matmul512_fp16 after matmul512 — starts
   from those schedules, adapted (``tuner.transfer``); the first of each
   operator starts cold, as MetaSchedule always does) vs ``ms.tune_tir`` run
   locally as a TVM user would (with ``LocalBuilder(f_build=fast_build)``, which
   builds tensorized schedules the default builder rejects, and ``LocalRunner``
   with its timing settings: number 3, repeat 1, min_repeat_ms 100, warm caches).
   The worker times with warm caches too (``sq_suite.WORKER_TIMING``). Final
   latency: the best schedule of each re-timed in fresh processes, alternately,
   warm caches, median of 7 repeats of ≥ 200 ms. Wall time: job submitted → done
   vs the ``tune_tir`` call; and the time tunehub took to first reach
   MetaSchedule's final best (as each tuner measured it).
2. Both beside numpy/OpenBLAS (throughput ratio; fp32 matmuls via BLAS) and the untuned build.
3. Warm start: a fresh database tunes related shapes of matmul first, then the
   target shape; trials to reach 95 % of the target's cold-start best (the
   cold run is the suite's first job, on an empty database), warm vs cold.

Results go to ``bench/results/search_quality.json`` and a markdown table is printed.
The pieces: ``sq_suite`` (workloads), ``sq_children`` (the fresh processes,
subcommands starting with ``_``), ``sq_tunehub`` (the service side), ``sq_report``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from sq_children import add_parsers, run_child  # noqa: E402
from sq_report import markdown, save, time_to, trials_to  # noqa: E402
from sq_suite import BUDGET, PER_BATCH, QUICK, SUITE, TIMING, WARM_RELATED, WARM_TARGET, WORKER_TIMING, workload  # noqa: E402
from sq_tunehub import tunehub_side  # noqa: E402


def _child(args: list[str], timeout: float = 3600) -> dict[str, Any]:
    """Run a child subcommand of this script in a fresh process with 2 threads; its last JSON line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TVM_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}  # 2 threads, like TVM
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {args[:3]} failed: {out.stderr.decode()[-2000:]}")
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def _time(name: str, target: dict[str, Any], variant: str, trace: str | None, tmp: Path) -> float | None:
    args = ["_time", "--workload", name, "--target", json.dumps(target), "--variant", variant]
    if trace is not None:
        path = tmp / f"{name}-{uuid.uuid4().hex[:6]}.trace.json"
        path.write_text(trace)
        args += ["--trace", str(path)]
    return _child(args, timeout=900)["secs"]


def _compare(name: str, ours: dict[str, Any], target: dict[str, Any], trials: int, per_batch: int,
             work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """MetaSchedule on the same workload and budget, both bests re-timed, numpy and untuned beside."""
    ms_res = _child(["_ms_tune", "--workload", name, "--target", json.dumps(target), "--trials", str(trials),
                     "--per-batch", str(per_batch), "--workdir", str(work / f"ms-{name}"), "--seed", "0"])
    print(f"[{name}] MetaSchedule: best {ms_res['best_secs']}, wall {ms_res['wall_s']:.0f} s; timing ...", flush=True)
    t_ours, t_ms = [], []
    for _ in range(args.retime):  # alternate, fresh process each
        t_ours.append(_time(name, target, "tuned", ours["best_trace"], work))
        t_ms.append(_time(name, target, "tuned", ms_res["best_trace"], work))
    numpy_s = _time(name, target, "numpy", None, work)
    untuned_s = _time(name, target, "untuned", None, work) if not args.skip_untuned else None
    _, flops = workload(name)
    final_ours, final_ms = statistics.median(t_ours), statistics.median(t_ms)
    reach = time_to(ours["timeline"], ms_res["best_secs"]) if ms_res["best_secs"] else None
    return {
        "flops": flops,
        "tunehub": {**{k: v for k, v in ours.items() if k != "best_trace"}, "final_secs": final_ours, "retimes": t_ours},
        "metaschedule": {**{k: v for k, v in ms_res.items() if k != "best_trace"}, "final_secs": final_ms,
                         "retimes": t_ms},
        "numpy_secs": numpy_s,
        "untuned_secs": untuned_s,
        "latency_ratio": final_ours / final_ms,
        "wall_ratio": ours["wall_s"] / ms_res["wall_s"],
        "tunehub_secs_to_ms_final": reach,
        "reach_ratio": reach / ms_res["wall_s"] if reach is not None else None,
    }


def _warm_start(results: dict[str, Any], mode: str, trials: int, per_batch: int, work: Path,
                side: dict[str, Any]) -> dict[str, Any]:
    """Trials to 95 % of the cold best on WARM_TARGET, cold (empty database) vs after related shapes."""
    cold = results["workloads"].get(WARM_TARGET)
    print(f"[warm start] related shapes {WARM_RELATED[mode]} then {WARM_TARGET} ...", flush=True)
    if cold is None:  # the suite did not include it: a cold run on an empty database first
        with tunehub_side(work / "cold", **side) as cold_th:
            cold_run = cold_th.tune(WARM_TARGET, trials, per_batch)
    else:
        cold_run = cold["tunehub"]
    with tunehub_side(work / "warm", **side) as warm_th:
        for related in WARM_RELATED[mode]:
            warm_th.tune(related, trials, per_batch)
        warm_run = warm_th.tune(WARM_TARGET, trials, per_batch)
    goal = cold_run["best_secs"] / 0.95
    t_cold = trials_to(cold_run["timeline"], goal)
    t_warm = trials_to(warm_run["timeline"], goal)
    return {
        "target": WARM_TARGET, "related": WARM_RELATED[mode], "cold_best_secs": cold_run["best_secs"],
        "warm_best_secs": warm_run["best_secs"], "goal_secs": goal, "cold_trials_to_goal": t_cold,
        "warm_trials_to_goal": t_warm,
        "ratio": (t_warm / t_cold) if (t_warm and t_cold) else None,
        "warm_timeline": warm_run["timeline"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    mode = "quick" if args.quick else "full"
    suite = args.only or (QUICK if args.quick else SUITE)
    trials, per_batch = args.trials or BUDGET[mode], PER_BATCH[mode]
    side = {"pipeline_depth": args.pipeline_depth, "cost_model": args.cost_model}
    work = Path(tempfile.mkdtemp(prefix="tunehub-bench-"))
    print(f"search_quality ({mode}): {len(suite)} workloads, {trials} trials each, {per_batch} per batch; "
          f"logs in {work}", flush=True)
    results: dict[str, Any] = {"mode": mode, "trials": trials, "per_batch": per_batch, "timing": TIMING,
                               "worker_timing": WORKER_TIMING, "pipeline_depth": args.pipeline_depth,
                               "cost_model": args.cost_model, "machine": os.uname().nodename, "nproc": os.cpu_count(),
                               "workloads": {}}
    with tunehub_side(work / "suite", **side) as th:
        results["target"] = th.target
        for name in suite:
            print(f"[{name}] tunehub ...", flush=True)
            ours = th.tune(name, trials, per_batch)
            print(f"[{name}] tunehub: best {ours['best_secs']}, wall {ours['wall_s']:.0f} s; MetaSchedule ...",
                  flush=True)
            results["workloads"][name] = _compare(name, ours, th.target, trials, per_batch, work, args)
            save(results, args.out)
    if not args.skip_warm:
        results["warm_start"] = _warm_start(results, mode, trials, per_batch, work, side)
        save(results, args.out)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_parsers(parser.add_subparsers(dest="cmd"))
    parser.add_argument("--quick", action="store_true", help=f"subset {QUICK}, {BUDGET['quick']} trials")
    parser.add_argument("--only", nargs="*", help="run only these workloads")
    parser.add_argument("--trials", type=int, help="trial budget per workload (default full 256, quick 32)")
    parser.add_argument("--retime", type=int, default=3, help="fresh-process re-timings of each best")
    parser.add_argument("--skip-warm", action="store_true")
    parser.add_argument("--pipeline-depth", type=int, default=2,
                        help="TUNEHUB_TUNER_PIPELINE_DEPTH of the service (1: search waits while the worker measures)")
    parser.add_argument("--cost-model", choices=("metaschedule", "tunehub"), default="metaschedule",
                        help="TUNEHUB_COST_MODEL of the service")
    parser.add_argument("--skip-untuned", action="store_true")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "search_quality.json")
    args = parser.parse_args(argv)
    if run_child(args):
        return 0
    results = run(args)
    print()
    print(markdown(results))
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
