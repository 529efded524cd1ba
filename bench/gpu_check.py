"""GPU kernels tuned by the fleet, measured beside cuBLAS/cuDNN in one run, plus a held end-to-end check.

    python bench/gpu_check.py [--out DIR] [--budget-s 300] [--trials 64] [--sizes 4096,8192]
                              [--dtypes float16,bfloat16] [--no-conv] [--e2e matmul_float16_4096]
                              [--arch sm_90]   # serve this arch without a GPU (a rehearsal)
                              [--dry-run]      # everything that runs without a GPU; no worker, no timing
                              [--direct]       # also one candidate through builder+runner sandboxes

(Over 400 lines on purpose: one prepared script for a GPU machine, run once per lent
machine; its plan, baselines, harness and report stay side by side.)

What it does, with real components only:

1. plans the workloads: fp16 and bf16 matmuls (``--sizes``, N³, fp16/bf16 out as
   cuBLAS's ``torch.matmul`` gives) and a ResNet-50 ``conv2_x`` 3×3 convolution
   (batch 32, 64→64 channels, 56×56, fp16, NCHW), each as a one-operator ONNX model
   whose weights are inputs (an 8192² fp16 weight would be a 128 MiB upload);
2. describes the machine (``nvidia-smi``, the GPUs ``workers.detect`` finds, the
   CUDA compiler, TVM's view of the device, PyTorch's);
3. starts ``tunehub serve`` on a free loopback port (SQLite in a temp dir,
   ``tunehub.harness``), uploads the models and makes one job per workload for the
   GPU's target with ``--trials`` and a share of ``--budget-s`` as its time budget;
4. starts ``tunehub worker --all-gpus`` (detection decides the target), which
   leases, builds (nvcc/NVRTC), checks on the GPU and times the candidates the
   tuner's search proposes, until every job ends;
5. times the same operators with PyTorch on the GPU (cuBLAS for matmul, cuDNN with
   ``cudnn.benchmark`` for the convolution) with CUDA events, and prints each tuned
   kernel's TFLOP/s beside them as a ratio (the target: ≥ 0.8× cuBLAS on matmul);
6. the held end-to-end check: the configs of one job (``--e2e``) are downloaded,
   the model compiled with them for the GPU (``tuner.compile``) and run, and the
   output compared with PyTorch's (numpy's where PyTorch has no GPU).

``--dry-run`` does 1 and 2, then 3 with the tuner off (the models go through the
service's intake for the GPU target and the jobs are queued), and writes the
result with every GPU step skipped and its reason; it needs no GPU and is what
the suite tests. Without a GPU and without ``--arch``/``--dry-run`` it exits 2.

Prints a markdown summary; writes ``gpu_check.json`` to ``--out`` (default
``$OUT`` if set, else ``bench/results``) and the process logs to
``--out``/gpu_check_logs. Exit code 0 when every job ended done with a tuned
kernel and the end-to-end output matched (dry run: when every job was queued
with its tasks).

To run it on a GPU machine without network access, carry the repository and a
site folder holding apache-tvm 0.27.0.post1, apache-tvm-ffi 0.1.14.post0 and this
package's dependencies (PyTorch with CUDA where the baselines should run), then
``PYTHONPATH=<site>:. python bench/gpu_check.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TARGET_RATIO = 0.8  # tuned TFLOP/s over cuBLAS's, what the issue asks of bf16/fp16 matmul
ONNX_DTYPES = {"float16": 10, "bfloat16": 16, "float32": 1}  # onnx.TensorProto
TOLERANCE = {"float16": 2e-2, "bfloat16": 5e-2, "float32": 1e-4}  # rtol/atol of the end-to-end check
DEFAULT_ARCH = "sm_90"  # what a dry run plans for when the machine has no GPU


@dataclass(frozen=True)
class Workload:
    """One operator to tune: its ONNX model, FLOPs and how PyTorch runs it."""

    name: str
    op: str  # "matmul" | "conv2d"
    dtype: str
    shape: dict[str, int]

    @property
    def flops(self) -> float:
        s = self.shape
        if self.op == "matmul":
            return 2.0 * s["m"] * s["n"] * s["k"]
        return 2.0 * s["n"] * s["k"] * s["h"] * s["w"] * s["c"] * s["r"] * s["s"]

    def inputs(self) -> dict[str, list[int]]:
        s = self.shape
        if self.op == "matmul":
            return {"a": [s["m"], s["k"]], "b": [s["k"], s["n"]]}
        return {"x": [s["n"], s["c"], s["h"], s["w"]], "w": [s["k"], s["c"], s["r"], s["s"]]}

    def onnx_bytes(self) -> bytes:
        """The one-node model (weights as inputs, opset 17)."""
        from onnx import helper

        elem = ONNX_DTYPES[self.dtype]
        ins = [helper.make_tensor_value_info(n, elem, shape) for n, shape in self.inputs().items()]
        if self.op == "matmul":
            node = helper.make_node("MatMul", ["a", "b"], ["y"])
            out = [self.shape["m"], self.shape["n"]]
        else:
            p = self.shape["r"] // 2
            node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[p, p, p, p], strides=[1, 1])
            out = [self.shape["n"], self.shape["k"], self.shape["h"], self.shape["w"]]
        graph = helper.make_graph([node], self.name, ins, [helper.make_tensor_value_info("y", elem, out)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model.SerializeToString()


def plan(sizes: list[int], dtypes: list[str], conv: bool) -> list[Workload]:
    """The workloads of one run, in the order they are reported."""
    out = [Workload(f"matmul_{d}_{n}", "matmul", d, {"m": n, "n": n, "k": n}) for d in dtypes for n in sizes]
    if conv:  # ResNet-50 conv2_x: the 3×3 convolution most of its stage-1 time is in
        out.append(Workload("conv2d_resnet50_conv2x_float16", "conv2d", "float16",
                            {"n": 32, "c": 64, "h": 56, "w": 56, "k": 64, "r": 3, "s": 3}))
    return out


@dataclass
class Result:
    """Everything one run found; ``gpu_check.json`` is ``asdict`` of it."""

    mode: str  # "gpu" | "rehearsal" | "dry_run"
    args: dict[str, Any]
    bench: str = "gpu_check"
    when: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))
    machine: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    plan: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, Any] = field(default_factory=dict)  # workload -> job id, status, tasks
    worker: dict[str, Any] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)  # workload -> tuned vs baseline
    e2e: dict[str, Any] = field(default_factory=dict)
    direct: dict[str, Any] = field(default_factory=dict)
    passed: bool = False
    wall_s: float = 0.0


def skipped(reason: str) -> dict[str, str]:
    """A step that did not run, and why (the JSON says so rather than leaving it out)."""
    return {"skipped": reason}


# --- the machine ----------------------------------------------------------------------


def machine_report() -> dict[str, Any]:
    from workers.detect import detect_gpus, find_cuda_compiler

    report: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi], capture_output=True, text=True, timeout=30, check=False)
        report["nvidia_smi"] = out.stdout[-3000:] or out.stderr[-1000:]
    report["gpus"] = [g.__dict__ | {"arch": g.arch} for g in detect_gpus()]
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
    report["torch"] = torch_status()
    return report


def torch_status() -> dict[str, Any]:
    """Whether PyTorch can give cuBLAS/cuDNN baselines here, and why not."""
    try:
        import torch
    except ImportError as exc:
        return {"available": False, "reason": f"PyTorch is not installed ({exc})"}
    if not torch.cuda.is_available():
        return {"available": False, "version": torch.__version__,
                "reason": f"PyTorch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda})"}
    return {"available": True, "version": torch.__version__, "cuda": torch.version.cuda,
            "device": torch.cuda.get_device_name(0), "cudnn": torch.backends.cudnn.version()}


# --- baselines: cuBLAS / cuDNN through PyTorch --------------------------------------------


def torch_inputs(w: Workload, seed: int = 0) -> list[Any]:
    """The workload's inputs on the GPU, uniform in [-1, 1) (the same as ``tuner.compile.random_inputs``)."""
    from tuner.compile import random_inputs

    import torch

    arrays = random_inputs(w.inputs(), {n: w.dtype for n in w.inputs()}, seed=seed)
    dtype = getattr(torch, w.dtype)
    return [torch.from_numpy(a.astype("float32")).to(device="cuda", dtype=dtype) for a in arrays]


def torch_op(w: Workload) -> Any:
    import torch

    if w.op == "matmul":
        return torch.matmul
    pad = w.shape["r"] // 2
    return lambda x, k: torch.nn.functional.conv2d(x, k, padding=pad)


def torch_baseline(w: Workload, status: dict[str, Any], *, warmup: int = 5, repeat: int = 20) -> dict[str, Any]:
    """cuBLAS (matmul) or cuDNN (conv) time of the workload, by CUDA events; skipped with the reason."""
    if not status.get("available"):
        return skipped(status.get("reason", "PyTorch unavailable"))
    import torch

    torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithm, as a tuned user would
    args, op = torch_inputs(w), torch_op(w)
    for _ in range(warmup):
        op(*args)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeat):
        op(*args)
    end.record()
    torch.cuda.synchronize()
    secs = start.elapsed_time(end) / 1e3 / repeat
    return {"library": "cuBLAS" if w.op == "matmul" else "cuDNN", "secs": secs, "tflops": w.flops / secs / 1e12}


def compare(w: Workload, tuned_secs: float | None, baseline: dict[str, Any]) -> dict[str, Any]:
    """One row of the report: tuned and baseline TFLOP/s and their ratio (None where either is missing)."""
    tuned = None if tuned_secs is None else {"secs": tuned_secs, "tflops": w.flops / tuned_secs / 1e12}
    ratio = None
    if tuned is not None and "secs" in baseline:
        ratio = baseline["secs"] / tuned_secs  # type: ignore[operator]
    return {
        "workload": w.name, "op": w.op, "dtype": w.dtype, "gflop": w.flops / 1e9, "tuned": tuned,
        "baseline": baseline, "ratio": ratio,
        "meets_target": None if ratio is None or w.op != "matmul" else ratio >= TARGET_RATIO,
    }


# --- the service and its worker ---------------------------------------------------------


def gpu_target(arch: str | None) -> tuple[dict[str, Any] | None, str]:
    """The target to tune for and where it came from; (None, reason) when there is none."""
    from workers.detect import cuda_target, detect_gpus

    if arch:
        return cuda_target(f"{arch[3:-1]}.{arch[-1]}"), f"--arch {arch}"
    gpus = detect_gpus()
    if gpus:
        return cuda_target(gpus[0].compute_cap), f"GPU 0: {gpus[0].name}"
    return None, "no NVIDIA GPU found (nvidia-smi, CUDA driver)"


def submit_jobs(client: Any, workloads: list[Workload], target: dict[str, Any], workdir: Path, *,
                trials: int, budget_s: float) -> dict[str, Any]:
    """Upload each workload's model and make its job; {workload: {model, job, tasks}}.

    The jobs share the GPU's worker and run side by side, so each gets the whole
    budget as its time budget (the scheduler splits the worker between them).
    """
    jobs: dict[str, Any] = {}
    for w in workloads:
        path = workdir / f"{w.name}.onnx"
        path.write_bytes(w.onnx_bytes())
        model = client.upload_model(path, name=w.name)
        job = client.create_job(model.id, target, trials=trials, time_budget_s=budget_s)
        jobs[w.name] = {"model_id": model.id, "job_id": job.id, "status": job.status.value,
                        "tasks": [t.name for t in job.tasks]}
    return jobs


def wait_jobs(client: Any, jobs: dict[str, Any], deadline: float, worker: Any) -> None:
    """Poll until every job ended, the worker exited or the deadline passed; fills status and tuned time."""
    while True:
        views = {name: client.job(j["job_id"]) for name, j in jobs.items()}
        ended = all(v.status.value not in ("queued", "running") for v in views.values())
        if ended or worker.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(2)
    for name, view in views.items():
        best = [t.best_latency_s for t in view.tasks if t.best_latency_s]
        jobs[name].update(status=view.status.value, error=view.error, trials_done=view.trials_done,
                          trials_valid=sum(t.trials_valid for t in view.tasks),
                          best_secs=max(best) if best else None)  # the operator's own task is the slowest


def e2e_check(client: Any, w: Workload, job_id: int, target: dict[str, Any], workdir: Path,
              torch_ok: bool) -> dict[str, Any]:
    """Held check: download the job's configs, compile the model with them, run on the GPU, compare."""
    import numpy as np

    from tuner.compile import compile_model_stats, random_inputs, run_outputs
    from tuner.configs import extract_config_zip

    configs = extract_config_zip(client.download_configs(job=job_id), workdir / f"configs_{w.name}")
    compiled = compile_model_stats(w.onnx_bytes(), None, target, configs)
    inputs = random_inputs(compiled.input_shapes, compiled.input_dtypes, seed=1)
    (got,) = run_outputs(compiled.exe, inputs, target)
    if torch_ok:
        import torch

        want = torch_op(w)(*[torch.from_numpy(a.astype("float32")).to("cuda", getattr(torch, w.dtype)) for a in inputs])
        want = want.float().cpu().numpy()
        reference = "PyTorch on the GPU"
    else:
        as32 = [a.astype("float32") for a in inputs]
        if w.op != "matmul":
            return {"functions_tuned": compiled.functions_tuned, **skipped("no PyTorch on the GPU for a conv reference")}
        want, reference = as32[0] @ as32[1], "numpy fp32"
    got32 = got.astype("float32")
    tol = TOLERANCE[w.dtype]
    err = float(np.max(np.abs(got32 - want)) / max(1e-6, float(np.max(np.abs(want)))))
    return {"workload": w.name, "job_id": job_id, "functions_tuned": compiled.functions_tuned,
            "functions_total": compiled.functions_total, "reference": reference, "max_rel_err": err,
            "tolerance": tol, "matches": bool(np.allclose(got32, want, rtol=tol, atol=tol * float(np.max(np.abs(want)))))}


def direct_check(target: dict[str, Any], compiler: str | None, workdir: Path) -> dict[str, Any]:
    """One replay-trace candidate of a 512³ fp32 matmul through a builder and a runner sandbox, no
    service: shows whether the runner loads the builder's binary or compiles again."""
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm_helpers import matmul_workload

    from common.tvm_env import prepare_tvm
    from common.tvm_json import trace_to_json, workload_hash, workload_to_json
    from workers import sandbox_protocol as sp
    from workers.sandbox_client import Sandbox

    prepare_tvm(("cuda",))
    mod = matmul_workload(512)
    ctx = ms.TuneContext(mod=mod, target=tvm.target.Target(target), space_generator="post-order-apply",
                         search_strategy="replay-trace", num_threads=4, rand_state=0)
    ctx.search_strategy.pre_tuning(max_trials=1, num_trials_per_iter=1, design_spaces=ctx.generate_design_space(),
                                   database=ms.database.MemoryDatabase(), cost_model=ms.cost_model.RandomModel())
    (cand,) = (ctx.search_strategy.generate_measure_candidates() or [])[:1]
    req = {"workload_hash": workload_hash(mod), "mod_json": workload_to_json(mod),
           "trace": trace_to_json(cand.sch.trace), "target": target}
    with Sandbox(target_kind="cuda", num_threads=1, cuda_compiler=compiler, name="builder") as b, \
            Sandbox(target_kind="cuda", num_threads=1, cuda_compiler=compiler, name="runner") as r:
        built = b.call({**req, "op": "build", "out": str(workdir / "direct")}, 300)
        if not isinstance(built, sp.Built):
            return {"build": built.model_dump() if built is not None else None}
        ran = r.call({**req, "op": "run", "artifact": built.artifact, "check_artifact": built.check_artifact,
                      "timed_args": built.timed_args, "device_binaries": [d.model_dump() for d in built.device_binaries],
                      "number": 1, "repeat": 5, "min_repeat_ms": 20, "warmup": 1}, 300)
    return {"build": {"device_binaries": [d.model_dump() for d in built.device_binaries], "note": built.note},
            "run": ran.model_dump() if ran is not None else None}


# --- the run ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench" / "results"))
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="tuning time, all jobs side by side (the defaults fit a 10-minute call)")
    parser.add_argument("--trials", type=int, default=64, help="trials per job (the budget may end it first)")
    parser.add_argument("--sizes", default="4096,8192", help="matmul sizes N (N³), comma-separated")
    parser.add_argument("--dtypes", default="float16,bfloat16", help="matmul dtypes, comma-separated")
    parser.add_argument("--no-conv", dest="conv", action="store_false", help="leave out the ResNet-style conv")
    parser.add_argument("--e2e", default=None, help="workload of the end-to-end check (default: the first)")
    parser.add_argument("--arch", default=None, help="serve this arch (e.g. sm_90) instead of the detected GPU's")
    parser.add_argument("--dry-run", action="store_true", help="no worker, no GPU: plan, service, intake, report")
    parser.add_argument("--direct", action="store_true", help="also one candidate through builder+runner sandboxes")
    parser.add_argument("--grace-s", type=float, default=60.0, help="wait past the budget for jobs to end")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s]
    args.dtypes = [d for d in str(args.dtypes).split(",") if d]
    for d in args.dtypes:
        if d not in ONNX_DTYPES:
            parser.error(f"--dtypes: unknown dtype {d!r} (expected {', '.join(ONNX_DTYPES)})")
    if args.arch and not (args.arch.startswith("sm_") and args.arch[3:].isdigit()):
        parser.error(f"--arch: expected sm_XY, got {args.arch!r}")
    return args


def run(args: argparse.Namespace) -> Result:
    """The whole check; never raises for a missing GPU or baseline (those are ``skipped``)."""
    from tunehub.harness import Harness

    started = time.monotonic()
    workloads = plan(args.sizes, args.dtypes, args.conv)
    target, source = gpu_target(args.arch)
    if target is None and args.dry_run:
        target, source = gpu_target(DEFAULT_ARCH)[0], f"dry run: no GPU here, planning for {DEFAULT_ARCH}"
    mode = "dry_run" if args.dry_run else ("rehearsal" if args.arch else "gpu")
    result = Result(mode=mode, args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    result.machine = machine_report()
    if target is None:
        raise SystemExit(f"{source}; use --arch sm_XY to rehearse or --dry-run")
    result.target = {**target, "source": source}
    e2e_name = args.e2e or workloads[0].name
    if e2e_name not in {w.name for w in workloads}:
        raise SystemExit(f"--e2e {e2e_name}: not a planned workload ({', '.join(w.name for w in workloads)})")
    result.plan = [{**asdict(w), "gflop": w.flops / 1e9, "inputs": w.inputs(), "trials": args.trials,
                    "time_budget_s": args.budget_s} for w in workloads]
    torch_ok = bool(result.machine["torch"].get("available"))

    tmp = Path(tempfile.mkdtemp(prefix="tunehub-gpu-check-"))
    try:
        # Every job at once (the tuner runs 2 by default): each job's time budget is the whole budget.
        overrides = {"TUNEHUB_LEASE_TTL_S": "120", "TUNEHUB_TUNER_MAX_JOBS": str(len(workloads))}
        with Harness(tmp, overrides=overrides, log_dir=args.out / "gpu_check_logs") as stack:
            stack.start_service(tuner=not args.dry_run)
            with stack.client() as client:
                result.jobs = submit_jobs(client, workloads, target, tmp, trials=args.trials, budget_s=args.budget_s)
                if args.dry_run:
                    result.worker = skipped("dry run: no worker is started (it needs a GPU and a CUDA compiler)")
                else:
                    # A rehearsal (--arch) names its device and target: detection would find no GPU.
                    wargs = ["--device", "cuda:0", "--target", json.dumps(target)] if args.arch else ["--all-gpus"]
                    stack.start_worker("gpu-check", args=wargs)
                    proc = stack.procs["gpu-check"]
                    wait_jobs(client, result.jobs, time.monotonic() + args.budget_s + args.grace_s, proc)
                    result.worker = {"exit": proc.poll(), "workers": [w.model_dump(mode="json") for w in client.workers()]}
                for w in workloads:
                    if args.dry_run:
                        base = skipped("dry run: no GPU timing")
                    else:
                        base = torch_baseline(w, result.machine["torch"])
                    result.results.append(compare(w, result.jobs[w.name].get("best_secs"), base))
                e2e_w = next(w for w in workloads if w.name == e2e_name)
                if args.dry_run:
                    result.e2e = skipped("dry run: nothing tuned to download")
                elif result.jobs[e2e_name].get("best_secs") is None:
                    result.e2e = skipped(f"job for {e2e_name} has no tuned kernel ({result.jobs[e2e_name].get('status')})")
                else:
                    try:
                        result.e2e = e2e_check(client, e2e_w, result.jobs[e2e_name]["job_id"], target, tmp, torch_ok)
                    except Exception as exc:  # noqa: BLE001 - the report says what failed
                        result.e2e = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        if args.direct and not args.dry_run:
            compiler = result.machine["cuda_compiler"]
            result.direct = direct_check(target, compiler["mode"] if compiler else None, tmp)
        elif args.direct:
            result.direct = skipped("dry run: no GPU to run on")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.wall_s = round(time.monotonic() - started, 1)
    result.passed = judge(result)
    return result


def judge(result: Result) -> bool:
    """Dry run: every job was queued with its tasks. Otherwise: every job done with a tuned kernel,
    and the end-to-end output matched."""
    if result.mode == "dry_run":
        return bool(result.jobs) and all(j["tasks"] and j["status"] == "queued" for j in result.jobs.values())
    tuned = all(j.get("status") == "done" and j.get("best_secs") for j in result.jobs.values())
    return tuned and bool(result.e2e.get("matches"))


def summary(result: Result) -> str:
    m = result.machine
    lines = [
        f"GPU check ({result.mode}): target {result.target.get('arch')} ({result.target.get('source')}), "
        f"GPUs {[g['name'] for g in m.get('gpus', [])] or 'none'}, CUDA compiler {m.get('cuda_compiler')}, "
        f"TVM sees a GPU: {m.get('tvm_cuda_exists')}, PyTorch: {m.get('torch', {}).get('reason') or m.get('torch')}",
        "",
        "| workload | GFLOP | job | trials valid | tuned TFLOP/s | baseline | baseline TFLOP/s | tuned / baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result.results:
        job, base = result.jobs.get(r["workload"], {}), r["baseline"]
        tuned = f"{r['tuned']['tflops']:.1f}" if r["tuned"] else "-"
        base_tflops = f"{base['tflops']:.1f}" if "tflops" in base else "-"
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else f"- ({base.get('skipped', 'no tuned kernel')})"
        lines.append(f"| {r['workload']} | {r['gflop']:.1f} | {job.get('job_id')} {job.get('status')} "
                     f"| {job.get('trials_valid', '-')} | {tuned} | {base.get('library', '-')} | {base_tflops} | {ratio} |")
    lines += ["", f"end-to-end: {json.dumps(result.e2e, default=str)[:400]}",
              f"passed: {result.passed} ({result.wall_s} s)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code)
            return 2
        raise
    (args.out / "gpu_check.json").write_text(json.dumps(asdict(result), indent=1, default=str))
    print(summary(result))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
