"""The build-and-measure sandbox: a long-lived child process, one request per line.

Run as ``python -m workers.sandbox --kind llvm [--num-threads N] [--cpus 0,1]``.
It imports TVM once and then serves forever: one JSON request per line on
stdin, one JSON reply per line on stdout. A candidate that segfaults, aborts or
hangs takes only this process down; the parent
(``workers.sandbox_client.Sandbox``) names the cause and starts another.

The messages are ``workers.sandbox_protocol``'s models: ``build`` (apply a trace,
build, export to files), ``run`` (load a builder's artifact, check it against the
reference, time it), ``measure`` (both in this one process, nothing on disk),
``calibrate`` (time the fixed calibration kernel) and ``ping``. ``mod_json`` may be
omitted once this process has seen the workload; an unknown workload without it
answers ``missing_workload`` so the parent can resend. Failures answer
``"<stage>: <reason>"`` with an ``ErrorKind``; stages: request, load workload,
target, apply trace, build, export, load, reference build, reference run, run,
wrong output.

Test-only ops ``crash`` and ``sleep`` are honoured only when ``TUNEHUB_SANDBOX_TEST_OPS=1``.
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

from common.processes import die_with_parent
from common.protocol import ErrorKind
from workers import sandbox_protocol as sp
from workers.building import ArgSpec, Built, PrebuiltCuda, arg_specs, needs_intrinsics
from workers.checking import compare, numpy_dtype, random_array  # noqa: F401  (re-exported)
from workers.timing import CpuLoad, pin_threads, time_it

TEST_OPS_ENV = "TUNEHUB_SANDBOX_TEST_OPS"
MAX_ERROR_CHARS = 2000
TIMING_FIELDS = set(sp.TimingFields.model_fields)
REFERENCE_CACHE = 4  # workloads whose inputs and reference outputs stay in memory


def device_for(target_kind: str) -> Any:
    """The one place that maps a target kind to the device candidates run on."""
    import tvm

    if target_kind == "llvm":
        return tvm.cpu(0)
    if target_kind == "cuda":
        return tvm.cuda(0)
    raise ValueError(f"Unknown device for target kind: {target_kind}")


STAGE_KINDS: dict[str, ErrorKind] = {"run": ErrorKind.run, "wrong output": ErrorKind.wrong_output}
"""The error kind of a failed stage; every other stage (request, load workload, target, apply
trace, build, export, load, reference build, reference run) is a build failure."""


class StageError(Exception):
    """A failure in one stage of a measurement; becomes ``{"error": "<stage>: ...", "error_kind"}``."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")
        self.kind = STAGE_KINDS.get(stage, ErrorKind.build)


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


@dataclass
class _Workload:
    mod: Any  # IRModule {"main": PrimFunc}
    entry: str
    seed: int
    args: list[ArgSpec]


@dataclass
class _Reference:
    inputs: list[np.ndarray]  # every buffer before the run
    outputs: list[np.ndarray]  # every buffer after the untuned run


class SandboxServer:
    """Holds parsed workloads, reference outputs and the calibration kernel between requests."""

    def __init__(
        self,
        *,
        test_ops: bool = False,
        kind: str = "llvm",
        cuda_compiler: str | None = None,
        cpus: list[int] | None = None,
    ):
        self.test_ops = test_ops
        self.kind = kind
        self.cpus = list(cpus or [])  # the CPUs our measuring threads run on
        self._workloads: dict[str, _Workload] = {}  # small: kept for the process's life
        self._references: OrderedDict[str, _Reference] = OrderedDict()  # big: LRU
        self._calibration: dict[str, tuple[Any, list[Any]]] = {}  # target JSON -> (module, tensors)
        self._intrinsics = False
        self.cuda = PrebuiltCuda(cuda_compiler)
        if kind == "cuda":
            self.cuda.install()

    def handle(self, request: sp.Request) -> sp.Reply:
        """One reply for one request; never raises."""
        started = time.time()
        reply: sp.Reply
        try:
            if isinstance(request, sp.MeasureRequest):
                reply = self.measure(request)
            elif isinstance(request, sp.BuildRequest):
                reply = self.build(request)
            elif isinstance(request, sp.RunRequest):
                reply = self.run(request)
            elif isinstance(request, sp.CalibrateRequest):
                reply = self.calibrate(request)
            elif isinstance(request, sp.PingRequest):
                reply = sp.Pong()
            elif self.test_ops and isinstance(request, sp.CrashRequest):
                os.kill(os.getpid(), getattr(signal, request.signal))
                time.sleep(10)  # the signal lands first
                reply = sp.failed(ErrorKind.crash, "crash: signal did not kill the sandbox")
            elif self.test_ops and isinstance(request, sp.SleepRequest):
                time.sleep(request.seconds)
                reply = sp.Pong()
            else:
                reply = sp.failed(ErrorKind.build, f"request: unknown op {request.op!r}")
        except _MissingWorkload as exc:
            reply = sp.failed(ErrorKind.build, str(exc), missing_workload=True)
        except StageError as exc:
            reply = sp.failed(exc.kind, str(exc))
        except Exception as exc:  # noqa: BLE001 - a failure is a reply, never a dead sandbox
            reply = sp.failed(ErrorKind.run, f"sandbox: {_reason(exc)}")
        if request.op in ("build", "run", "measure") and isinstance(reply, (sp.Failed, sp.Built, sp.Timed)):
            reply.t_start = started  # when the work happened, errors included (for the timeline)
            reply.t_end = time.time()
        reply.id = request.id
        return reply

    # --- workloads and references ------------------------------------------

    def _workload(self, request: sp.WorkloadRequest) -> _Workload:
        key = request.workload_hash
        if key in self._workloads:
            return self._workloads[key]
        text = request.mod_json
        if not text:
            raise _MissingWorkload(f"load workload: workload {key} is unknown to this sandbox and no mod_json was sent")
        with _Stage("load workload"):
            from common.tvm_json import workload_from_json

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

    # --- the ops ------------------------------------------------------------

    def _target(self, request: sp.WorkloadRequest | sp.CalibrateRequest) -> tuple[Any, dict[str, Any]]:
        from workers.building import build_target

        with _Stage("target"):
            return build_target(request.target), request.target

    def _build(self, request: sp.BuildRequest | sp.MeasureRequest, workload: _Workload, target: Any) -> Built:
        from workers.building import build_scheduled, schedule

        with _Stage("apply trace"):
            trace = request.trace
            if needs_intrinsics(trace) and not self._intrinsics:
                from common.tvm_env import prepare_tvm

                prepare_tvm((self.kind,))
                self._intrinsics = True
            scheduled = schedule(workload.mod, trace)
        with _Stage("build"):
            return build_scheduled(scheduled, workload.entry, target, check=request.check)

    def build(self, request: sp.BuildRequest) -> sp.Built:
        """Build a candidate and write it to disk for a runner (op ``build``)."""
        from workers.building import export_built

        workload = self._workload(request)
        target, target_json = self._target(request)
        built = self._build(request, workload, target)
        with _Stage("export"):
            info = export_built(built, target_json, request.out, cuda_compiler=self.cuda.mode)
        return sp.Built.model_validate(info)

    def run(self, request: sp.RunRequest) -> sp.Timed:
        """Load a builder's artifact, check it against the reference, time it (op ``run``)."""
        from workers.building import load_artifact

        workload = self._workload(request)
        target, target_json = self._target(request)
        with _Stage("target"):
            dev = device_for(str(target.kind.name))
        with _Stage("load"):
            self.cuda.arch = target_json
            for b in request.device_binaries:
                self.cuda.binaries[b.sha256] = b.path
            timed = load_artifact(request.artifact)
            checked = load_artifact(request.check_artifact) if request.check_artifact else timed
            timed_args = [(n, d, tuple(s)) for n, d, s in request.timed_args]
        built = Built(timed=timed, checked=checked, timed_args=timed_args)
        run_secs, others = self._check_and_time(workload, built, dev, request)
        reply = sp.Timed(run_secs=run_secs, others_busy=others)
        if self.kind == "cuda":  # did loading use the builders' binaries, or compile again?
            reply.cuda_binaries = {"hits": self.cuda.hits, "misses": self.cuda.misses}
        return reply

    def measure(self, request: sp.MeasureRequest) -> sp.Timed:
        """Build, check and time in this process, nothing on disk (op ``measure``)."""
        workload = self._workload(request)
        target, _ = self._target(request)
        with _Stage("target"):
            dev = device_for(str(target.kind.name))
        built = self._build(request, workload, target)
        run_secs, others = self._check_and_time(workload, built, dev, request)
        return sp.Timed(run_secs=run_secs, others_busy=others)

    def _check_and_time(
        self, workload: _Workload, built: Built, dev: Any, request: sp.RunRequest | sp.MeasureRequest
    ) -> tuple[list[float], float | None]:
        """(every repeat's seconds, the share of our CPUs other processes used meanwhile)."""
        import tvm

        tensors = None
        if request.check:
            ref = self._reference(request.workload_hash, workload)
            with _Stage("run"):
                tensors = [tvm.runtime.tensor(a, dev) for a in ref.inputs]
                built.checked[workload.entry](*tensors)
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
            # The timed kernel may take weights in a rewritten layout: then fresh inputs of its shapes.
            if tensors is None or [a[1:] for a in built.timed_args] != [a[1:] for a in workload.args]:
                rng = np.random.default_rng(workload.seed)
                tensors = [tvm.runtime.tensor(random_array(rng, d, s), dev) for _, d, s in built.timed_args]
            with CpuLoad(self.cpus) as load:
                run_secs = time_it(built.timed, workload.entry, dev, tensors, request.model_dump(include=TIMING_FIELDS))
            return run_secs, load.others

    def calibrate(self, request: sp.CalibrateRequest) -> sp.Calibrated:
        """Time the fixed calibration kernel on this process's device (op ``calibrate``)."""
        import tvm

        from workers.building import calibration_kernel

        target, target_json = self._target(request)
        with _Stage("target"):
            dev = device_for(str(target.kind.name))
        cache_key = json.dumps(target_json, sort_keys=True)
        if cache_key not in self._calibration:
            with _Stage("build"):
                self.cuda.arch = target_json
                rt_mod, specs = calibration_kernel(target)
            rng = np.random.default_rng(0)
            tensors = [tvm.runtime.tensor(random_array(rng, d, s), dev) for _, d, s in specs]
            self._calibration[cache_key] = (rt_mod, tensors)
        rt_mod, tensors = self._calibration[cache_key]
        timing = {
            "number": 1,
            "repeat": request.repeat,
            "min_repeat_ms": request.min_repeat_ms,
            "warmup": 2,
        }
        with _Stage("run"), CpuLoad(self.cpus) as load:
            results = time_it(rt_mod, "main", dev, tensors, timing)
        return sp.Calibrated(secs=float(np.median(results)), results=results, others_busy=load.others)


def _claim_stdout() -> IO[str]:
    """Keep fd 1 for replies only: TVM and LLVM print to fd 1 from C++ at will."""
    sys.stdout.flush()
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(reply_fd, "w", buffering=1, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="llvm", help="target kind (its tensor intrinsics load when a trace needs them)")
    parser.add_argument("--num-threads", type=int, default=None, help="TVM_NUM_THREADS for measurements")
    parser.add_argument("--cpus", default=None, help="pin one measuring thread to each of these CPUs, e.g. 0,1")
    parser.add_argument("--cuda-compiler", default=None, help="nvcc or nvrtc: how CUDA source becomes a binary")
    args = parser.parse_args(argv)
    parent = os.environ.get(sp.PARENT_PID_ENV)
    die_with_parent(signal.SIGKILL, parent_pid=int(parent) if parent else None)  # even mid-measurement
    out = _claim_stdout()

    def reply(message: sp.Reply) -> None:
        out.write(message.model_dump_json(exclude_none=True) + "\n")
        out.flush()

    from common.tvm_env import prepare_tvm

    cpus = [int(c) for c in args.cpus.split(",")] if args.cpus else []
    prepare_tvm((), num_threads=len(cpus) or args.num_threads)  # stub only; before TVM's thread pool starts
    import tvm

    if cpus:
        pin_threads(cpus)
    if args.cuda_compiler:
        os.environ["TVM_CUDA_COMPILE_MODE"] = args.cuda_compiler
    server = SandboxServer(
        test_ops=os.environ.get(TEST_OPS_ENV) == "1", kind=args.kind, cuda_compiler=args.cuda_compiler, cpus=cpus
    )
    reply(sp.Ready(pid=os.getpid(), tvm=tvm.__version__, cpus=cpus or sorted(os.sched_getaffinity(0))))
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = sp.REQUEST.validate_json(line)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            reply(sp.failed(ErrorKind.build, f"request: not a valid request: {str(exc)[:MAX_ERROR_CHARS]}"))
            continue
        reply(server.handle(request))
    return 0


if __name__ == "__main__":
    sys.exit(main())
