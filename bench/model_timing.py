"""Time (or profile) TVM and onnxruntime builds of one model side by side, each in its own process.

Two thread pools in one process interfere (TVM_NOTES §2), so every variant of a
model (TVM untuned, TVM with configs, onnxruntime) lives in its own child
process: it loads/compiles once, writes its outputs on fixed inputs, then
answers ``run`` lines on stdin with one timing round each. The parent
alternates rounds across the variants so that a busy spell on the shared box
hits all of them alike, and keeps the median round per variant. While one
variant is timed every other variant's process is stopped (SIGSTOP): an idle
thread pool spins for a while after its last call (onnxruntime's and TVM's
both do), and a neighbour still spinning on the two cores made rounds bimodal.

Child: ``python bench/model_timing.py child SPEC_JSON``. Profile child:
``python bench/model_timing.py profile SPEC_JSON`` prints a per-operator table as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ROUND_MS = 300  # one timing round: calls for at least this long, mean per call


@dataclass
class Variant:
    """One way to run a model: ``kind`` "tvm" (``configs``, ``fallback``) or "ort"."""

    label: str
    kind: str
    model: str
    target: dict[str, Any]
    configs: str | None = None
    fallback: str = "default"
    outputs: str = ""  # .npz written by the child
    info: dict[str, Any] = field(default_factory=dict)


def _inputs(model: bytes) -> tuple[list[str], list[Any]]:
    from tuner.compile import random_inputs
    from tuner.intake import inspect_onnx

    spec = inspect_onnx(model)
    return spec.names, random_inputs(spec.shapes, spec.dtypes, seed=1)


def _ort_session(path: str, threads: int, profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _load(spec: dict[str, Any], profile: bool = False) -> tuple[Any, dict[str, Any], Any]:
    """(call(): outputs, info, extra) for a variant spec, in this process."""
    content = Path(spec["model"]).read_bytes()
    names, arrays = _inputs(content)
    threads = int(spec["target"].get("num-cores") or os.cpu_count() or 1)
    if spec["kind"] == "ort":
        sess = _ort_session(spec["model"], threads, spec.get("profile_prefix") if profile else None)
        feed = dict(zip(names, arrays, strict=True))
        return (lambda: sess.run(None, feed)), {"threads": threads}, sess
    from tuner.compile import compile_model_stats, set_num_threads
    from tuner.default_schedule import Fallback

    set_num_threads(spec["target"])
    import tvm
    from tvm import relax

    compiled = compile_model_stats(content, None, spec["target"], Path(spec["configs"]) if spec.get("configs") else None,
                                   fallback=Fallback(spec.get("fallback", "default")))
    dev = tvm.cpu(0)
    vm = relax.VirtualMachine(compiled.exe, dev)
    args = [tvm.runtime.tensor(a, dev) for a in arrays]
    info = {"functions_total": compiled.functions_total, "functions_tuned": compiled.functions_tuned,
            "schedules": compiled.schedules, "compile_s": round(compiled.compile_secs, 2)}

    def call() -> list[Any]:
        from tuner.compile import _flatten

        return _flatten(vm["main"](*args))

    return call, info, (vm, args)


def child(spec: dict[str, Any]) -> None:
    import numpy as np

    call, info, _ = _load(spec)
    outs = [np.asarray(o) for o in call()]  # also the warm-up
    np.savez(spec["outputs"], *outs)
    print(json.dumps({"ready": True, **info}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        call()  # warm again: caches and thread pool were idle (stopped) since the last round
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) * 1e3 < ROUND_MS or n < 3:
            call()
            n += 1
        print(json.dumps({"ms": elapsed * 1e3 / n, "calls": n}), flush=True)


def _spawn(mode: str, spec: dict[str, Any]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), mode, json.dumps(spec)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))


def _read_json(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{what} exited (rc {proc.wait()}) before answering")


def _signal(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)


def _timed_round(proc: subprocess.Popen[str], procs: list[subprocess.Popen[str]], label: str) -> float:
    """One timing round of ``proc`` with every other variant's process stopped (ms per call)."""
    for other in procs:
        _signal(other, signal.SIGCONT if other is proc else signal.SIGSTOP)
    time.sleep(0.05)  # threads that were mid-spin when stopped stay frozen; let the kernel settle
    assert proc.stdin is not None
    proc.stdin.write("run\n")
    proc.stdin.flush()
    return float(_read_json(proc, label)["ms"])


def time_side_by_side(variants: list[Variant], workdir: Path, rounds: int = 7) -> dict[str, dict[str, Any]]:
    """Median ms per call of each variant, rounds alternated across variants; outputs compared to the first."""
    import numpy as np

    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[str]] = []
    try:
        for i, v in enumerate(variants):  # one at a time, so compiles do not compete
            v.outputs = str(workdir / f"out_{i}.npz")
            proc = _spawn("child", v.__dict__ | {"info": {}})
            procs.append(proc)
            v.info = _read_json(proc, v.label)
        runs: dict[str, list[float]] = {v.label: [] for v in variants}
        for _ in range(rounds):
            for v, proc in zip(variants, procs, strict=True):
                runs[v.label].append(_timed_round(proc, procs, v.label))
    finally:
        for proc in procs:
            _signal(proc, signal.SIGCONT)
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    ref = list(np.load(variants[-1].outputs).values())  # the last variant (ORT by convention) is the reference
    out = {}
    for v in variants:
        got = list(np.load(v.outputs).values())
        err = max(float(np.max(np.abs(g.astype(np.float64) - r))) / (float(np.max(np.abs(r))) or 1.0)
                  for g, r in zip(got, ref, strict=True))
        out[v.label] = {"median_ms": statistics.median(runs[v.label]), "runs_ms": runs[v.label],
                        "max_rel_err_vs_ref": err, **v.info}
    return out


# --- per-operator profiles ------------------------------------------------


def _tvm_profile(vm_args: Any) -> list[dict[str, Any]]:
    """Per-function wall time through the VM's call instrument (TVM 0.27 has no VM profiler)."""
    vm, args = vm_args
    totals: dict[str, float] = {}
    starts: dict[str, float] = {}

    def instrument(func: Any, symbol: str, before: bool, ret: Any, *fargs: Any) -> int:
        now = time.perf_counter()
        if before:
            starts[symbol] = now
        else:
            totals[symbol] = totals.get(symbol, 0.0) + now - starts.pop(symbol, now)
        return 0

    vm.set_instrument(instrument)
    by_name: dict[str, list[float]] = {}
    for _ in range(5):
        totals.clear()
        vm["main"](*args)
        for name, secs in totals.items():
            by_name.setdefault(name, []).append(secs * 1e6)
    return sorted(({"op": k, "us": statistics.median(v)} for k, v in by_name.items()), key=lambda r: -r["us"])


def _ort_profile(sess: Any, call: Any) -> list[dict[str, Any]]:
    for _ in range(6):
        call()
    trace = json.loads(Path(sess.end_profiling()).read_text())
    by_node: dict[tuple[str, str], list[float]] = {}
    for ev in trace:
        if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time"):
            key = (ev["name"][: -len("_kernel_time")], ev.get("args", {}).get("op_name", "?"))
            by_node.setdefault(key, []).append(float(ev["dur"]))
    rows = [{"op": f"{op}:{node}", "op_type": op, "us": statistics.median(v)} for (node, op), v in by_node.items()]
    return sorted(rows, key=lambda r: -r["us"])


def profile_child(spec: dict[str, Any]) -> None:
    call, info, extra = _load(spec, profile=True)
    call()
    rows = _ort_profile(extra, call) if spec["kind"] == "ort" else _tvm_profile(extra)
    print(json.dumps({"info": info, "rows": rows}), flush=True)


def profile(variant: Variant, workdir: Path) -> dict[str, Any]:
    """Per-operator times (µs, median of 5 runs) of one variant, profiled in its own process."""
    spec = variant.__dict__ | {"profile_prefix": str(workdir / "ort_profile")}
    workdir.mkdir(parents=True, exist_ok=True)
    proc = _spawn("profile", spec)
    try:
        return _read_json(proc, variant.label)
    finally:
        proc.wait(timeout=600)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    {"child": child, "profile": profile_child}[sys.argv[1]](json.loads(sys.argv[2]))
