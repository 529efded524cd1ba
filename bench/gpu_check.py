"""The whole GPU path in one run: lease -> build -> run on the GPU -> report.

    python bench/gpu_check.py [--out DIR] [--candidates 6] [--size 512] [--timeout 420]
                              [--arch sm_90]   # only to rehearse on a machine without a GPU

What it does, with real components only:

1. describes the machine: ``nvidia-smi``, the GPUs ``workers.detect`` finds, the
   CUDA compiler (nvcc or NVRTC) the worker would use, TVM's own view
   (``tvm.cuda(0).exist``, compute version);
2. starts ``tunehub serve --no-tuner`` on a free loopback port (SQLite in a temp
   dir; ``tunehub.harness``);
3. makes a job for the detected GPU's target and enqueues MetaSchedule
   candidates for a ``--size``³ fp32 matmul and a 256³ fp16 matmul (a cuda
   TuneContext, replay-trace, seed 0: what the tuner would propose);
4. starts ``tunehub worker --device cuda:0`` (no ``--target``: detection decides),
   which leases the batch, builds it in parallel (nvcc/NVRTC compile the CUDA
   source to a fatbin/cubin in the builders), then checks each candidate on the
   GPU against the CPU reference and times it, and reports;
5. reads the measurement rows back, then runs one candidate once more through a
   builder and a runner sandbox directly to show whether the runner loaded the
   builder's binary (``tvm_callback_cuda_compile`` hits) or compiled again.

Prints a markdown summary; writes ``gpu_check.json`` to ``--out`` (default
``$OUT`` if set, else ``bench/results``) and the service/worker logs to
``--out``/gpu_check_logs. Exit code 0 when every candidate has a measurement
and at least one ran on the GPU.

To run it on a GPU machine without network access, carry the repository and a
site folder holding apache-tvm 0.27.0.post1, apache-tvm-ffi 0.1.14.post0 and
this package's dependencies, then ``PYTHONPATH=<site>:. python bench/gpu_check.py``
(about 5 minutes). ``--arch sm_90`` rehearses it on a machine without a GPU:
everything up to the GPU run works, and the runs fail with the loader's reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def machine_report(arch: str | None) -> dict[str, Any]:
    from workers.detect import detect_gpus, find_cuda_compiler

    report: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi], capture_output=True, text=True, timeout=30, check=False)
        report["nvidia_smi"] = out.stdout[-3000:] or out.stderr[-1000:]
    gpus = detect_gpus()
    report["gpus"] = [g.__dict__ | {"arch": g.arch} for g in gpus]
    compiler = find_cuda_compiler()
    report["cuda_compiler"] = None if compiler is None else {"mode": compiler.mode, "detail": compiler.detail}
    import tvm

    report["tvm"] = tvm.__version__
    try:
        dev = tvm.cuda(0)
        report["tvm_cuda_exists"] = bool(dev.exist)
        report["tvm_compute_version"] = dev.compute_version if dev.exist else None
    except Exception as exc:  # noqa: BLE001 - no CUDA runtime at all
        report["tvm_cuda_exists"] = False
        report["tvm_cuda_error"] = f"{type(exc).__name__}: {exc}"[:500]
    report["rehearsal_arch"] = arch
    return report


def candidates(target: dict[str, Any], mod: Any, count: int) -> list[str]:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from common.tvm_env import prepare_tvm
    from common.tvm_json import trace_to_json

    prepare_tvm(("cuda",))
    ctx = ms.TuneContext(
        mod=mod, target=tvm.target.Target(target), space_generator="post-order-apply",
        search_strategy="replay-trace", num_threads=4, rand_state=0,
    )
    strategy = ctx.search_strategy
    strategy.pre_tuning(
        max_trials=count, num_trials_per_iter=count, design_spaces=ctx.generate_design_space(),
        database=ms.database.MemoryDatabase(), cost_model=ms.cost_model.RandomModel(),
    )
    cands = strategy.generate_measure_candidates() or []
    strategy.post_tuning()
    return [trace_to_json(c.sch.trace) for c in cands[:count]]


def seed_job(db_url: str, target: dict[str, Any], workloads: list[tuple[str, Any, list[str]]]) -> list[tuple[str, int]]:
    """A job with one task per workload and its candidates queued; [(workload name, candidate id)]."""
    from types import SimpleNamespace

    from db import jobs, queue, uploads
    from db.workloads import upsert_workloads
    from db.engine import make_engine, make_sessionmaker, session_scope
    from common.targets import canonical_target
    from common.tvm_json import args_info_json, workload_hash, workload_to_json

    canonical, key = canonical_target(target)
    engine = make_engine(db_url)
    out: list[tuple[str, int]] = []
    with session_scope(make_sessionmaker(engine)) as s:
        model, _ = uploads.store_model(s, name="gpu-check", content=secrets.token_bytes(16), input_shapes={})
        wls = {
            name: SimpleNamespace(shash=workload_hash(mod), mod_json=workload_to_json(mod), args_info_json=args_info_json(mod), flops=None)
            for name, mod, _ in workloads
        }
        ids = upsert_workloads(s, extracted=list(wls.values()))
        job = jobs.create_job(
            s, model_id=model.id, target_json=canonical, target_key=key, trials=64, trials_per_round=16,
            tasks=[(name, 1, ids[wls[name].shash]) for name, _, _ in workloads],
        )
        tasks = {t.name: t.id for t in jobs.job_public(s, job_id=job).tasks}
        for name, _, traces in workloads:
            wid = ids[wls[name].shash]
            for cid in queue.enqueue_candidates(s, task_id=tasks[name], workload_id=wid, target_key=key, traces=traces, round=0):
                out.append((name, cid))
    engine.dispose()
    return out


def measurements(db_url: str) -> dict[int, dict[str, Any]]:
    from sqlalchemy import text

    from db.engine import make_engine

    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT candidate_id, worker_id, run_secs_json, error, flagged FROM measurements"))
        got = {r.candidate_id: {"worker_id": r.worker_id, "run_secs": json.loads(r.run_secs_json) if r.run_secs_json else None,
                                "error": r.error, "flagged": bool(r.flagged)} for r in rows}
    engine.dispose()
    return got


def direct_check(target: dict[str, Any], mod: Any, trace: str, compiler: str | None, workdir: Path) -> dict[str, Any]:
    """One candidate through a builder and a runner sandbox, no service: shows the binary hand-over."""
    from common.tvm_json import workload_hash, workload_to_json
    from workers import sandbox_protocol as sp
    from workers.sandbox_client import Sandbox

    req = {"workload_hash": workload_hash(mod), "mod_json": workload_to_json(mod), "trace": trace, "target": target}
    with Sandbox(target_kind="cuda", num_threads=1, cuda_compiler=compiler, name="builder") as b, \
            Sandbox(target_kind="cuda", num_threads=1, cuda_compiler=compiler, name="runner") as r:
        built = b.call({**req, "op": "build", "out": str(workdir / "direct")}, 300)
        if not isinstance(built, sp.Built):
            return {"build": built.model_dump() if built is not None else None}
        ran = r.call({**req, "op": "run", "artifact": built.artifact, "check_artifact": built.check_artifact,
                      "timed_args": built.timed_args,
                      "device_binaries": [d.model_dump() for d in built.device_binaries],
                      "number": 1, "repeat": 5, "min_repeat_ms": 20, "warmup": 1}, 300)
        cal = r.call({"op": "calibrate", "target": target}, 300)
    dump = (lambda m: m.model_dump() if m is not None else None)  # noqa: E731
    return {"build": {"device_binaries": [d.model_dump() for d in built.device_binaries], "note": built.note},
            "run": dump(ran), "calibrate": dump(cal)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench" / "results"))
    parser.add_argument("--candidates", type=int, default=6, help="candidates per workload")
    parser.add_argument("--size", type=int, default=512, help="fp32 matmul size N (N³)")
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds to wait for the measurements")
    parser.add_argument("--arch", default=None, help="rehearse without a GPU: serve this arch (e.g. sm_90)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result: dict[str, Any] = {"bench": "gpu_check", "when": time.strftime("%Y-%m-%dT%H:%M:%S")}

    from tvm_helpers import matmul_workload
    from workers.detect import cuda_target, detect_gpus, find_cuda_compiler

    result["machine"] = machine_report(args.arch)
    gpus = detect_gpus()
    if args.arch:
        target = cuda_target(f"{args.arch[3:-1]}.{args.arch[-1]}")
    elif gpus:
        target = cuda_target(gpus[0].compute_cap)
    else:
        print("no NVIDIA GPU found (nvidia-smi, CUDA driver); use --arch sm_XX to rehearse without one")
        return 2
    result["target"] = target
    compiler = find_cuda_compiler()

    workloads = [(f"matmul{args.size}_fp32", matmul_workload(args.size), []), ("matmul256_fp16", matmul_workload(256, "float16"), [])]
    t0 = time.monotonic()
    for _, mod, traces in workloads:
        traces.extend(candidates(target, mod, args.candidates))
    result["candidates_generated_s"] = round(time.monotonic() - t0, 1)

    tmp = Path(tempfile.mkdtemp(prefix="tunehub-gpu-check-"))
    from tunehub.harness import Harness

    with Harness(tmp, overrides={"TUNEHUB_LEASE_TTL_S": "60"}, log_dir=args.out / "gpu_check_logs") as stack:
        stack.start_service(tuner=False)
        queued = seed_job(stack.db_url, target, workloads)
        wargs = ["--device", "cuda:0", "--max-candidates", "16"]
        if args.arch:
            wargs += ["--target", json.dumps(target)]
        stack.start_worker("gpu-check", args=wargs)
        worker = stack.procs["gpu-check"]
        deadline = time.monotonic() + args.timeout
        got: dict[int, dict[str, Any]] = {}
        while time.monotonic() < deadline and worker.poll() is None:
            got = measurements(stack.db_url)
            if len(got) >= len(queued):
                break
            time.sleep(1)
        result["worker_exit"] = worker.poll()
        result["measurements"] = [{"workload": name, "candidate": cid, **got.get(cid, {"error": "not measured"})} for name, cid in queued]
        with stack.client() as client:
            result["workers"] = [w.model_dump(mode="json") for w in client.workers()]
    result["direct"] = direct_check(target, workloads[0][1], workloads[0][2][0], compiler.mode if compiler else None, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    result["wall_s"] = round(time.monotonic() - started, 1)

    ok = [m for m in result["measurements"] if m.get("run_secs")]
    measured_all = all(m.get("error") != "not measured" for m in result["measurements"])
    result["passed"] = bool(ok) and measured_all
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1, default=str))
    print(summary(result))
    return 0 if result["passed"] else 1


def summary(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"GPU check: target {result['target'].get('arch')}, GPUs {[g['name'] for g in m['gpus']] or 'none'}, "
        f"CUDA compiler {m['cuda_compiler']}, TVM sees a GPU: {m.get('tvm_cuda_exists')}",
        f"candidates generated in {result['candidates_generated_s']} s; worker exit {result.get('worker_exit')}",
        "",
        "| workload | candidate | mean (µs) | repeats | flagged | error |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["measurements"]:
        secs = r.get("run_secs")
        mean = f"{sum(secs) / len(secs) * 1e6:.1f}" if secs else "-"
        err = (r.get("error") or "").splitlines()[0][:90] if r.get("error") else ""
        lines.append(f"| {r['workload']} | {r['candidate']} | {mean} | {len(secs or [])} | {r.get('flagged', '')} | {err} |")
    cal = [w.get("calibration") for w in result.get("workers", [])]
    direct = result.get("direct", {})
    lines += [
        "",
        f"worker calibration: {cal}",
        f"direct run: {json.dumps(direct.get('run'), default=str)[:400]}",
        f"passed: {result['passed']} ({result['wall_s']} s)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
