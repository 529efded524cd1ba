"""Search quality: tunehub (service + one local worker) beside MetaSchedule's ``tune_tir`` run locally.

    python bench/search_quality.py [--quick] [--only matmul512 ...] [--out bench/results/search_quality.json]

Measured in one run, on this machine:

1. Per suite workload, the same trial budget: tunehub (``tunehub serve`` with its
   tuner and ``tunehub worker``, SQLite, one shared database for the suite, as a
   team runs it: a workload whose operator the suite tuned before at another
   shape or dtype — matmul1024 and matmul512_fp16 after matmul512 — starts
   from those schedules, adapted (``tuner.transfer``); the first of each
   operator starts cold, as MetaSchedule always does) vs ``ms.tune_tir`` run locally as a TVM user would (with
   ``LocalBuilder(f_build=fast_build)`` — the tensor-intrinsic fix of TVM_NOTES §1 —
   and ``LocalRunner`` with its timing settings: number 3, repeat 1,
   min_repeat_ms 100, warm caches). The worker times with warm caches too
   (``WORKER_TIMING``: 3 repeats of ≥ 40 ms; its default flushes caches before
   each repeat, which optimises for another objective than the re-timing
   below). Final latency: the best schedule of each re-timed in fresh
   processes, alternately, warm caches, median of 7 repeats of ≥ 200 ms.
   Wall time: job submitted → done vs the ``tune_tir`` call; and the time tunehub
   took to first reach MetaSchedule's final best (as each tuner measured it).
2. Both beside numpy/OpenBLAS (throughput ratio; fp32 matmuls via BLAS) and the untuned build.
3. Warm start: a fresh database tunes related shapes of matmul first, then the
   target shape; trials to reach 95 % of the target's cold-start best (the
   cold run is the suite's first job, on an empty database), warm vs cold.

Results go to ``bench/results/search_quality.json`` and a markdown table is printed.
Subcommands starting with ``_`` are the fresh child processes it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(BENCH)]

# name -> (builder, flops, numpy baseline kind)
SUITE = ("matmul512", "matmul1024", "conv2d_resnet", "dense_bias_relu", "batch_matmul", "matmul512_fp16")
QUICK = ("matmul512", "dense_bias_relu_small", "matmul256_fp16")
BUDGET = {"full": 256, "quick": 32}
PER_BATCH = {"full": 16, "quick": 8}
WARM_RELATED = {"full": ("matmul384", "matmul640"), "quick": ("matmul384", "matmul640")}
WARM_TARGET = "matmul512"
TIMING = {"number": 3, "repeat": 1, "min_repeat_ms": 100}
WORKER_TIMING = {"TUNEHUB_WORKER_NUMBER": "1", "TUNEHUB_WORKER_REPEAT": "3", "TUNEHUB_WORKER_MIN_REPEAT_MS": "40",
                 "TUNEHUB_WORKER_WARMUP": "1", "TUNEHUB_WORKER_CACHE_FLUSH": "false"}
PIPELINE_DEPTH = [2]  # --pipeline-depth
COST_MODEL = ["metaschedule"]  # --cost-model (TUNEHUB_COST_MODEL of the service)


# --- workloads (TE → PrimFunc) ---------------------------------------------------


def workload(name: str) -> tuple[Any, float]:
    """(IRModule {"main": PrimFunc}, FLOPs) of a suite workload."""
    import tvm
    from tvm import te, topi

    def mm(n: int, m: int, k: int, dtype: str = "float32", acc: str = "float32") -> tuple[Any, float]:
        a = te.placeholder((n, k), dtype, name="A")
        b = te.placeholder((k, m), dtype, name="B")
        r = te.reduce_axis((0, k), "k")
        c = te.compute((n, m), lambda i, j: te.sum(a[i, r].astype(acc) * b[r, j].astype(acc), axis=r), name="C")
        return tvm.IRModule({"main": te.create_prim_func([a, b, c])}), 2.0 * n * m * k

    if name.startswith("matmul") and name.endswith("_fp16"):
        n = int(name[len("matmul"):-len("_fp16")])
        return mm(n, n, n, "float16", "float32")
    if name.startswith("matmul"):
        n = int(name[len("matmul"):])
        return mm(n, n, n)
    if name.startswith("dense_bias_relu"):
        n, k, m = (128, 1024, 1024) if name == "dense_bias_relu" else (64, 512, 512)
        x = te.placeholder((n, k), "float32", name="X")
        w = te.placeholder((m, k), "float32", name="W")
        bias = te.placeholder((m,), "float32", name="bias")
        r = te.reduce_axis((0, k), "k")
        d = te.compute((n, m), lambda i, j: te.sum(x[i, r] * w[j, r], axis=r), name="dense")
        y = te.compute((n, m), lambda i, j: te.max(d[i, j] + bias[j], tvm.tirx.const(0, "float32")), name="relu")
        return tvm.IRModule({"main": te.create_prim_func([x, w, bias, y])}), 2.0 * n * m * k
    if name == "batch_matmul":
        b_, n = 8, 256
        a = te.placeholder((b_, n, n), "float32", name="A")
        b = te.placeholder((b_, n, n), "float32", name="B")
        r = te.reduce_axis((0, n), "k")
        c = te.compute((b_, n, n), lambda q, i, j: te.sum(a[q, i, r] * b[q, r, j], axis=r), name="C")
        return tvm.IRModule({"main": te.create_prim_func([a, b, c])}), 2.0 * b_ * n**3
    if name == "conv2d_resnet":  # ResNet-50 stage-2 3×3 conv: 1×64×56×56, 64 filters, pad 1
        data = te.placeholder((1, 64, 56, 56), "float32", name="data")
        kernel = te.placeholder((64, 64, 3, 3), "float32", name="kernel")
        out = topi.nn.conv2d_nchw(data, kernel, 1, 1, 1)
        return tvm.IRModule({"main": te.create_prim_func([data, kernel, out])}), 2.0 * 64 * 56 * 56 * 64 * 9
    raise ValueError(f"unknown workload {name!r}")


def _inputs(mod: Any) -> list[Any]:
    import numpy as np

    from common.tvm_json import args_info_json

    rng = np.random.default_rng(0)
    return [rng.uniform(-1, 1, size=shape).astype(dtype) for _, dtype, shape in json.loads(args_info_json(mod))]


# --- children (fresh processes) ---------------------------------------------------


def child_time(args: argparse.Namespace) -> None:
    """Time one variant of a workload; prints {"secs": median of repeats}."""
    import numpy as np

    os.environ.setdefault("TVM_NUM_THREADS", "2")
    from common.tvm_env import prepare_tvm

    prepare_tvm(("llvm",), num_threads=2)
    import tvm

    mod, _ = workload(args.workload)
    arrays = _inputs(mod)
    if args.variant == "numpy":
        a, b = arrays[0], arrays[1]
        if args.workload.endswith("_fp16"):
            a, b = a.astype("float32"), b.astype("float32")  # OpenBLAS sgemm on the same shape
        if args.workload.startswith("dense_bias_relu"):
            fn = lambda: np.maximum(a @ b.T + arrays[2], 0)  # noqa: E731
        elif args.workload.startswith(("matmul", "batch_matmul")):
            fn = lambda: np.matmul(a, b)  # noqa: E731
        else:
            print(json.dumps({"secs": None}))
            return
        fn()
        runs = []
        for _ in range(7):
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < 0.2:
                fn()
                n += 1
            runs.append((time.perf_counter() - t0) / n)
        print(json.dumps({"secs": statistics.median(runs)}))
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
    out_shape = tensors[-1]
    lib["main"](*tensors)
    _ = out_shape
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
    start = time.monotonic()
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


# --- tunehub side ----------------------------------------------------------------


class Tunehub:
    """A ``tunehub serve`` (API + tuner, SQLite) and one ``tunehub worker`` in a temp dir."""

    def __init__(self, workdir: Path, log: Path) -> None:
        from common.processes import free_port, spawn, wait_healthy
        from common.client import TunehubClient

        self.data = workdir / "data"
        port = free_port()
        self.server = f"http://127.0.0.1:{port}"
        admin = secrets.token_urlsafe(32)
        env = {"TUNEHUB_DATA_DIR": str(self.data), "TUNEHUB_ADMIN_TOKEN": admin, "TUNEHUB_PORT": str(port),
               "TUNEHUB_TUNER_PIPELINE_DEPTH": str(PIPELINE_DEPTH[0]), "TUNEHUB_COST_MODEL": COST_MODEL[0],
               "TUNEHUB_DATABASE_URL": "", "TUNEHUB_LOG_LEVEL": "INFO", "TUNEHUB_ACCESS_LOG": "false",
               **WORKER_TIMING}
        self.procs = [spawn(["serve"], env=env, log=log)]
        wait_healthy(self.server, timeout_s=180, proc=self.procs[0])
        self.client = TunehubClient(self.server, admin)
        token = self.client.create_token("bench-worker", "worker").token
        self.procs.append(spawn(["worker", "--server", self.server, "--token", token, "--name", "bench-worker"],
                                env=env, log=log))
        deadline = time.monotonic() + 180
        while not self.client.workers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no worker registered; see {log}")
            time.sleep(0.5)
        self.target = self.client.workers()[0].target
        from db.engine import make_engine, make_sessionmaker

        self.factory = make_sessionmaker(make_engine(f"sqlite:///{self.data / 'tunehub.db'}"))

    def tune(self, name: str, trials: int, per_batch: int) -> dict[str, Any]:
        """A job with one task on the workload (rows written as intake does); waits until it ends."""
        from sqlalchemy import select

        from db.engine import db_now, session_scope
        from db.models import Candidate, Job, Measurement, Model, Task, Workload
        from common.targets import canonical_target
        from common.tvm_json import args_info_json, workload_hash, workload_to_json

        mod, flops = workload(name)
        target, key = canonical_target(self.target)
        with session_scope(self.factory) as s:
            now = db_now(s)
            model = Model(name=name, sha256=uuid.uuid4().hex * 2, format="onnx", content=b"", size_bytes=0,
                          input_shapes_json="{}", created_at=now)
            wl = s.scalar(select(Workload).where(Workload.shash == workload_hash(mod))) or Workload(
                shash=workload_hash(mod), mod_json=workload_to_json(mod), args_info_json=args_info_json(mod),
                flops=flops, created_at=now)
            s.add_all([model, wl])
            s.flush()
            job = Job(model_id=model.id, target_json=json.dumps(target), target_key=key, trials=trials,
                      trials_per_round=per_batch, retune=True, status="queued", created_at=now)
            s.add(job)
            s.flush()
            s.add(Task(job_id=job.id, workload_id=wl.id, name=name, weight=1))
            job_id = job.id
        start = time.monotonic()
        while True:
            with session_scope(self.factory) as s:
                j = s.get(Job, job_id)
                status, created, error = j.status, j.created_at, j.error
            if status not in ("queued", "running"):
                break
            time.sleep(0.5)
        wall = time.monotonic() - start
        if status != "done":
            raise RuntimeError(f"tunehub job for {name} ended {status}: {error}")
        with session_scope(self.factory) as s:
            rows = s.execute(
                select(Measurement.mean_secs, Measurement.created_at, Candidate.trace_json)
                .join(Candidate, Candidate.id == Measurement.candidate_id)
                .join(Task, Task.id == Candidate.task_id).where(Task.job_id == job_id).order_by(Measurement.id)
            ).all()
        timeline, best, best_trace = [], None, None
        for i, (mean, at, trace) in enumerate(rows, 1):
            if mean is not None and (best is None or mean < best):
                best, best_trace = mean, trace
            timeline.append(((at - created).total_seconds(), i, best))
        return {"wall_s": wall, "timeline": timeline, "best_secs": best, "best_trace": best_trace,
                "trials": len(rows)}

    def close(self) -> None:
        from common.processes import stop

        for proc in reversed(self.procs):
            stop(proc)


# --- the run ---------------------------------------------------------------------


def _child(args: list[str], timeout: float = 3600) -> dict[str, Any]:
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


def _trials_to(timeline: list[list[Any]], goal: float) -> int | None:
    for _, trial, best in timeline:
        if best is not None and best <= goal:
            return int(trial)
    return None


def _time_to(timeline: list[list[Any]], goal: float) -> float | None:
    for t, _, best in timeline:
        if best is not None and best <= goal:
            return float(t)
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    mode = "quick" if args.quick else "full"
    suite = args.only or (QUICK if args.quick else SUITE)
    trials, per_batch = args.trials or BUDGET[mode], PER_BATCH[mode]
    work = Path(tempfile.mkdtemp(prefix="tunehub-bench-"))
    log = work / "tunehub.log"
    print(f"search_quality ({mode}): {len(suite)} workloads, {trials} trials each, {per_batch} per batch; "
          f"logs in {work}", flush=True)
    results: dict[str, Any] = {"mode": mode, "trials": trials, "per_batch": per_batch, "timing": TIMING,
                               "worker_timing": WORKER_TIMING,
                               "pipeline_depth": PIPELINE_DEPTH[0], "cost_model": COST_MODEL[0],
                               "machine": os.uname().nodename, "nproc": os.cpu_count(), "workloads": {}}
    th = Tunehub(work / "suite", log)
    target = th.target
    results["target"] = target
    try:
        for name in suite:
            print(f"[{name}] tunehub ...", flush=True)
            ours = th.tune(name, trials, per_batch)
            print(f"[{name}] tunehub: best {ours['best_secs']}, wall {ours['wall_s']:.0f} s; MetaSchedule ...",
                  flush=True)
            ms_res = _child(["_ms_tune", "--workload", name, "--target", json.dumps(target), "--trials",
                             str(trials), "--per-batch", str(per_batch), "--workdir", str(work / f"ms-{name}"),
                             "--seed", "0"])
            print(f"[{name}] MetaSchedule: best {ms_res['best_secs']}, wall {ms_res['wall_s']:.0f} s; timing ...",
                  flush=True)
            t_ours, t_ms = [], []
            for _ in range(args.retime):  # alternate, fresh process each
                t_ours.append(_time(name, target, "tuned", ours["best_trace"], work))
                t_ms.append(_time(name, target, "tuned", ms_res["best_trace"], work))
            numpy_s = _time(name, target, "numpy", None, work)
            untuned_s = _time(name, target, "untuned", None, work) if not args.skip_untuned else None
            _, flops = workload(name)
            final_ours, final_ms = statistics.median(t_ours), statistics.median(t_ms)
            reach = _time_to(ours["timeline"], ms_res["best_secs"]) if ms_res["best_secs"] else None
            results["workloads"][name] = {
                "flops": flops,
                "tunehub": {**{k: v for k, v in ours.items() if k != "best_trace"}, "final_secs": final_ours,
                            "retimes": t_ours},
                "metaschedule": {**{k: v for k, v in ms_res.items() if k != "best_trace"}, "final_secs": final_ms,
                                 "retimes": t_ms},
                "numpy_secs": numpy_s,
                "untuned_secs": untuned_s,
                "latency_ratio": final_ours / final_ms,
                "wall_ratio": ours["wall_s"] / ms_res["wall_s"],
                "tunehub_secs_to_ms_final": reach,
                "reach_ratio": reach / ms_res["wall_s"] if reach is not None else None,
            }
            _save(results, args.out)
    finally:
        th.close()

    if not args.skip_warm:
        cold = results["workloads"].get(WARM_TARGET)
        print(f"[warm start] related shapes {WARM_RELATED[mode]} then {WARM_TARGET} ...", flush=True)
        warm_th = Tunehub(work / "warm", work / "tunehub-warm.log")
        try:
            if cold is None:  # the suite did not include it: a cold run on an empty database first
                cold_th = Tunehub(work / "cold", work / "tunehub-cold.log")
                try:
                    cold_run = cold_th.tune(WARM_TARGET, trials, per_batch)
                finally:
                    cold_th.close()
            else:
                cold_run = cold["tunehub"]
            for related in WARM_RELATED[mode]:
                warm_th.tune(related, trials, per_batch)
            warm_run = warm_th.tune(WARM_TARGET, trials, per_batch)
        finally:
            warm_th.close()
        goal = cold_run["best_secs"] / 0.95
        t_cold = _trials_to(cold_run["timeline"], goal)
        t_warm = _trials_to(warm_run["timeline"], goal)
        results["warm_start"] = {
            "target": WARM_TARGET, "related": WARM_RELATED[mode], "cold_best_secs": cold_run["best_secs"],
            "warm_best_secs": warm_run["best_secs"], "goal_secs": goal, "cold_trials_to_goal": t_cold,
            "warm_trials_to_goal": t_warm,
            "ratio": (t_warm / t_cold) if (t_warm and t_cold) else None,
            "warm_timeline": warm_run["timeline"],
        }
        _save(results, args.out)
    return results


def _save(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def markdown(results: dict[str, Any]) -> str:
    lines = [f"search_quality ({results['mode']}): {results['trials']} trials per workload, "
             f"{results['per_batch']} per batch, pipeline depth {results.get('pipeline_depth')}, "
             f"cost model {results.get('cost_model', 'metaschedule')}, target {json.dumps(results.get('target'))}", "",
             "| workload | tunehub ms | MS ms | latency ratio (≤0.9) | wall tunehub s | wall MS s | wall ratio | "
             "tunehub s to MS final (ratio, ≤0.5) | GFLOP/s tunehub | vs numpy | vs untuned |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    ratios = []
    for name, w in results["workloads"].items():
        ours, ms_ = w["tunehub"]["final_secs"], w["metaschedule"]["final_secs"]
        ratios.append(w["latency_ratio"])
        gflops = w["flops"] / ours / 1e9
        vs_np = (w["numpy_secs"] / ours) if w["numpy_secs"] else None
        vs_un = (w["untuned_secs"] / ours) if w["untuned_secs"] else None
        ms_np = f" (MS {w['numpy_secs'] / ms_:.2f})" if w["numpy_secs"] else ""
        reach = w["tunehub_secs_to_ms_final"]
        lines.append(
            f"| {name} | {ours * 1e3:.3f} | {ms_ * 1e3:.3f} | {w['latency_ratio']:.2f} | {w['tunehub']['wall_s']:.0f} | "
            f"{w['metaschedule']['wall_s']:.0f} | {w['wall_ratio']:.2f} | "
            f"{_fmt(reach, '.0f')} ({_fmt(w['reach_ratio'], '.2f')}) | {gflops:.1f} | {_fmt(vs_np, '.2f')}{ms_np} | "
            f"{_fmt(vs_un, '.0f')}× |")
    if ratios:
        lines += ["", f"suite median latency ratio tunehub/MetaSchedule: {statistics.median(ratios):.2f} (target ≤ 0.90)"]
    ws = results.get("warm_start")
    if ws:
        lines += ["", f"warm start on {ws['target']} after {', '.join(ws['related'])}: goal {ws['goal_secs'] * 1e3:.3f} ms "
                  f"(95 % of cold best {ws['cold_best_secs'] * 1e3:.3f} ms); trials to goal: cold "
                  f"{ws['cold_trials_to_goal']}, warm {ws['warm_trials_to_goal']} → ratio {_fmt(ws['ratio'], '.2f')} "
                  f"(target ≤ 0.30); warm best {ws['warm_best_secs'] * 1e3:.3f} ms"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd")
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
    if args.cmd == "_time":
        child_time(args)
        return 0
    if args.cmd == "_ms_tune":
        child_ms_tune(args)
        return 0
    PIPELINE_DEPTH[0] = args.pipeline_depth
    COST_MODEL[0] = args.cost_model
    results = run(args)
    print()
    print(markdown(results))
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
