"""The build-and-measure sandbox: a long-lived child process, one request per line.

Run as ``python -m workers.sandbox --kind llvm --num-threads N``. It imports TVM
once (with the fast tensor-intrinsic set-up, TVM_NOTES §1) and then serves
forever: one JSON request per line on stdin, one JSON reply per line on stdout.
A candidate that segfaults, aborts or hangs takes only this process down; the
parent (``workers.sandbox_client.Sandbox``) names the cause and starts another.

Request (``op`` defaults to ``"measure"``)::

    {"id": 7, "workload_hash": "...", "mod_json": "<tvm.ir.save_json text>",
     "trace": [instructions, decisions] or its JSON text, "target": {...},
     "number": 3, "repeat": 1, "min_repeat_ms": 100, "check": true}

``mod_json`` may be omitted once this process has seen the workload. Replies
echo ``id`` and carry either ``{"run_secs": [one per repeat]}`` or
``{"error": "<stage>: <reason>"}``; an unknown workload without ``mod_json``
also sets ``"missing_workload": true`` so the parent can resend it.

Test-only ops, honoured only when ``TUNEHUB_SANDBOX_TEST_OPS=1``:
``{"op": "crash", "signal": "SIGSEGV"}`` and ``{"op": "sleep", "seconds": s}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

TEST_OPS_ENV = "TUNEHUB_SANDBOX_TEST_OPS"
MAX_ERROR_CHARS = 2000
REFERENCE_CACHE = 4  # workloads whose inputs and reference outputs stay in memory

# Largest allowed |candidate - reference|, as a fraction of the reference's largest
# magnitude. Loose for 16-bit floats: tuned and untuned code accumulate in different
# orders (TVM_NOTES §7 saw 7.6e-3 relative error for fp16 and 6.6e-2 for bf16
# against fp32), while a wrong schedule is off by about the values themselves.
_REL_TOLERANCE = {"float64": 1e-6, "float32": 1e-3, "float16": 3e-2, "bfloat16": 1e-1}
_DEFAULT_FLOAT_TOLERANCE = 2.5e-1  # float8 and other narrow formats


def device_for(target_kind: str) -> Any:
    """The one place that maps a target kind to the device candidates run on."""
    import tvm

    if target_kind == "llvm":
        return tvm.cpu(0)
    if target_kind == "cuda":
        return tvm.cuda(0)
    raise ValueError(f"Unknown device for target kind: {target_kind}")


class StageError(Exception):
    """A failure in one stage of a measurement; becomes ``{"error": "<stage>: ..."}``."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")


class _MissingWorkload(Exception):
    """The parent must resend the request with ``mod_json``."""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 15] + " ...(truncated)"
    return f"{type(exc).__name__}: {text}"


class _Stage:
    """``with _Stage("build"):`` turns any exception inside into a StageError."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None and not isinstance(exc, StageError) and isinstance(exc, Exception):
            raise StageError(self.name, _reason(exc)) from exc
        return False


def numpy_dtype(name: str) -> np.dtype:
    """numpy dtype for a TVM dtype name; bf16 and float8 come from ml_dtypes."""
    if name == "bool":
        return np.dtype(np.bool_)
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes

        if not hasattr(ml_dtypes, name):
            raise ValueError(f"unsupported dtype {name!r}") from None
        return np.dtype(getattr(ml_dtypes, name))


def random_array(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Floats in [-1, 1); ints in [0, 4) so index-like inputs stay in bounds."""
    np_dtype = numpy_dtype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, 4, size=shape).astype(np_dtype)
    return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32).astype(np_dtype)


def compare(name: str, dtype: str, got: np.ndarray, want: np.ndarray) -> str | None:
    """None when ``got`` matches ``want`` within ``dtype``'s tolerance, else why not."""
    if dtype == "bool" or dtype.startswith(("int", "uint")):
        if np.array_equal(got, want):
            return None
        wrong = int(np.count_nonzero(got != want))
        return f"buffer {name}: {wrong} of {want.size} elements differ"
    g = np.asarray(got, dtype=np.float64)
    w = np.asarray(want, dtype=np.float64)
    finite = np.isfinite(w)
    if not np.array_equal(np.isfinite(g), finite) or not np.array_equal(g[~finite], w[~finite], equal_nan=True):
        return f"buffer {name}: NaN/inf where the reference has none (or the reverse)"
    if not finite.any():
        return None
    err = float(np.abs(g[finite] - w[finite]).max())
    scale = float(np.abs(w[finite]).max())
    bound = _REL_TOLERANCE.get(dtype, _DEFAULT_FLOAT_TOLERANCE) * (scale + 1e-3)
    if err <= bound:
        return None
    return f"buffer {name} max abs err {err:.4g} (tolerance {bound:.3g}, largest reference value {scale:.4g})"


def arg_specs(func: Any) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, dtype, shape) of each PrimFunc parameter; static-shape tensors only."""
    from tvm.s_tir import meta_schedule as ms

    specs = []
    for param, info in zip(func.params, ms.arg_info.ArgInfo.from_prim_func(func)):
        kind, dtype, shape = info.as_json()
        if kind != "TENSOR":
            raise ValueError(f"argument {param.name} is a {kind}; only tensors are supported")
        specs.append((str(param.name), str(dtype), tuple(int(d) for d in shape)))
    return specs


@dataclass
class _Workload:
    mod: Any  # IRModule {"main": PrimFunc}
    entry: str
    seed: int
    args: list[tuple[str, str, tuple[int, ...]]]  # (buffer name, dtype, shape)


@dataclass
class _Reference:
    inputs: list[np.ndarray]  # every buffer before the run
    outputs: list[np.ndarray]  # every buffer after the untuned run


class SandboxServer:
    """Holds parsed workloads and reference outputs between requests."""

    def __init__(self, *, test_ops: bool = False):
        self.test_ops = test_ops
        self._workloads: dict[str, _Workload] = {}  # small: kept for the process's life
        self._references: OrderedDict[str, _Reference] = OrderedDict()  # big: LRU

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """One reply for one request; never raises."""
        op = request.get("op", "measure")
        try:
            if op == "measure":
                reply = self.measure(request)
            elif op == "ping":
                reply = {"ok": True}
            elif self.test_ops and op == "crash":
                os.kill(os.getpid(), getattr(signal, request.get("signal", "SIGSEGV")))
                time.sleep(10)  # the signal lands first
                reply = {"error": "crash: signal did not kill the sandbox"}
            elif self.test_ops and op == "sleep":
                time.sleep(float(request.get("seconds", 3600)))
                reply = {"ok": True}
            else:
                reply = {"error": f"request: unknown op {op!r}"}
        except _MissingWorkload as exc:
            reply = {"error": str(exc), "missing_workload": True}
        except StageError as exc:
            reply = {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a failure is a reply, never a dead sandbox
            reply = {"error": f"sandbox: {_reason(exc)}"}
        if "id" in request:
            reply["id"] = request["id"]
        return reply

    # --- workloads and references ------------------------------------------

    def _workload(self, request: dict[str, Any]) -> _Workload:
        key = str(request.get("workload_hash") or "")
        if not key:
            raise StageError("request", "workload_hash is missing")
        if key in self._workloads:
            return self._workloads[key]
        text = request.get("mod_json")
        if not text:
            raise _MissingWorkload(f"load workload: workload {key} is unknown to this sandbox and no mod_json was sent")
        with _Stage("load workload"):
            from tunehub.tvm_json import workload_from_json

            mod = workload_from_json(text)
            gvars = mod.get_global_vars()
            entry = "main" if any(g.name_hint == "main" for g in gvars) else gvars[0].name_hint
            args = arg_specs(mod[entry])
        workload = _Workload(mod=mod, entry=entry, seed=zlib.crc32(key.encode()), args=args)
        self._workloads[key] = workload
        return workload

    def _reference(self, key: str, workload: _Workload) -> _Reference:
        """Inputs from the workload's own seed and the untuned build's outputs on them.

        The reference always runs on the host CPU: an unscheduled PrimFunc cannot
        be built for a GPU, and the host build is the same program.
        """
        ref = self._references.get(key)
        if ref is not None:
            self._references.move_to_end(key)
            return ref
        import tvm

        rng = np.random.default_rng(workload.seed)
        inputs = [random_array(rng, dtype, shape) for _, dtype, shape in workload.args]
        with _Stage("reference build"):
            rt_mod = tvm.tirx.build(workload.mod, target=tvm.target.Target({"kind": "llvm"}))
        with _Stage("reference run"):
            dev = tvm.cpu(0)
            tensors = [tvm.runtime.tensor(a, dev) for a in inputs]
            rt_mod[workload.entry](*tensors)
            outputs = [t.numpy() for t in tensors]
        ref = _Reference(inputs=inputs, outputs=outputs)
        self._references[key] = ref
        while len(self._references) > REFERENCE_CACHE:
            self._references.popitem(last=False)
        return ref

    # --- one measurement ----------------------------------------------------

    def measure(self, request: dict[str, Any]) -> dict[str, Any]:
        import tvm
        import tvm_ffi
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        from tunehub.tvm_json import apply_trace

        key = str(request.get("workload_hash") or "")
        workload = self._workload(request)
        with _Stage("target"):
            target = tvm.target.Target(request["target"])
            dev = device_for(str(target.kind.name))
        with _Stage("apply trace"):
            if "trace" not in request:
                raise ValueError("no trace in request")
            scheduled = apply_trace(workload.mod, request["trace"]).mod
        with _Stage("build"):
            # As MetaSchedule's default builder (TVM_NOTES §1): time the kernel
            # without the weight layout-rewrite block, as it runs once deployed.
            timed_mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(scheduled)
            timed = tvm.tirx.build(timed_mod, target=target)

        tensors = None
        if request.get("check", True):
            ref = self._reference(key, workload)
            with _Stage("build"):
                # Without the layout-rewrite block the kernel expects pre-rewritten
                # weights; check the whole program instead so the answers compare.
                same = tvm_ffi.structural_equal(timed_mod, scheduled)
                checked = timed if same else tvm.tirx.build(scheduled, target=target)
            with _Stage("run"):
                tensors = [tvm.runtime.tensor(a, dev) for a in ref.inputs]
                checked[workload.entry](*tensors)
                dev.sync()
                outputs = [t.numpy() for t in tensors]
            problems = [
                p
                for (name, dtype, _), got, want in zip(workload.args, outputs, ref.outputs)
                if (p := compare(name, dtype, got, want)) is not None
            ]
            if problems:
                raise StageError("wrong output", "; ".join(problems))
        with _Stage("run"):
            timed_args = arg_specs(timed_mod[workload.entry])  # weights may be in the rewritten layout
            if tensors is None or [a[1:] for a in timed_args] != [a[1:] for a in workload.args]:
                rng = np.random.default_rng(workload.seed)
                tensors = [tvm.runtime.tensor(random_array(rng, d, s), dev) for _, d, s in timed_args]
            timer = timed.time_evaluator(
                workload.entry,
                dev,
                number=int(request.get("number", 3)),
                repeat=int(request.get("repeat", 1)),
                min_repeat_ms=int(request.get("min_repeat_ms", 100)),
            )
            run_secs = [float(s) for s in timer(*tensors).results]
        return {"run_secs": run_secs}


def _claim_stdout() -> IO[str]:
    """Keep fd 1 for replies only: TVM and LLVM print to fd 1 from C++ at will."""
    sys.stdout.flush()
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(reply_fd, "w", buffering=1, encoding="utf-8")


def _die_with_parent() -> None:
    """Linux: get SIGKILL if the daemon dies, even mid-measurement (stdin EOF waits)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="llvm", help="target kind whose tensor intrinsics to load")
    parser.add_argument("--num-threads", type=int, default=None, help="TVM_NUM_THREADS for measurements")
    args = parser.parse_args(argv)
    _die_with_parent()
    out = _claim_stdout()

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        out.flush()

    from tunehub.tvm_env import prepare_tvm

    prepare_tvm((args.kind,), num_threads=args.num_threads)  # before TVM's thread pool starts
    import tvm

    server = SandboxServer(test_ops=os.environ.get(TEST_OPS_ENV) == "1")
    reply({"ready": True, "pid": os.getpid(), "tvm": tvm.__version__})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request must be a JSON object")
        except ValueError as exc:
            reply({"error": f"request: not a JSON object: {exc}"})
            continue
        reply(server.handle(request))
    return 0


if __name__ == "__main__":
    sys.exit(main())
