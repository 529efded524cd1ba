"""Model intake in a child process with memory and CPU-time limits, never in the API process.

The parent writes one JSON line (an :class:`IntakeRequest`) and then the model's
bytes to the child's stdin; the child imports what the work needs, sets
``RLIMIT_AS`` to what it uses then plus ``memory_mb`` and ``RLIMIT_CPU`` to
``cpu_s`` more seconds, runs :mod:`tuner.intake`, and writes one JSON line (an
:class:`IntakeReply`) back. It runs in an empty temporary directory, with no
core dumps, so nothing an upload names can be found relative to it.

At most ``intake_concurrency`` children run at once per process, so a burst of
uploads cannot multiply the memory limit; a request that waits longer than
``intake_wall_s`` for its turn is Unavailable (503, worth retrying).

Every outcome is a :class:`common.errors.TunehubError` the service maps to a 4xx:
a bad model is BadInput (422) with intake's reason; a model that needs more
memory, CPU or time than allowed is TooLarge (413) naming the setting; a child
that dies any other way is BadInput with its signal and last words.
"""

from __future__ import annotations

import enum
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from common.errors import BadInput, TooLarge, TunehubError, Unavailable
from tuner.intake import ExtractedWorkload, InputShapes, ModelInputs
from tuner.intake_checks import IntakeLimits

if TYPE_CHECKING:
    from common.settings import Settings

_ROOT = Path(__file__).resolve().parents[1]  # the child imports this same tree
_TAIL = 2000  # characters of the child's stderr kept for a message
_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def intake_slots(concurrency: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore for ``concurrency`` intake children at once."""
    with _slots_lock:
        return _slots.setdefault(concurrency, threading.BoundedSemaphore(concurrency))


class IntakeOp(str, enum.Enum):
    inspect = "inspect"  # parse, check, resolve inputs (onnx only)
    extract = "extract"  # ... and convert, fuse and split into tasks (TVM)


class IntakeRequest(BaseModel):
    op: IntakeOp
    size: int  # bytes of the model following the JSON line
    input_shapes: dict[str, list[int]] | None = None
    target: dict[str, Any] | None = None
    limits: IntakeLimits
    memory_mb: int
    cpu_s: int
    parent_pid: int


class IntakeReply(BaseModel):
    """Exactly one of: ``inputs`` (inspect), ``workloads`` (extract), or ``error`` with its HTTP ``status``."""

    inputs: ModelInputs | None = None
    workloads: list[ExtractedWorkload] | None = None
    error: str | None = None
    status: int = 422


def inspect_in_sandbox(content: bytes, input_shapes: InputShapes | None, settings: Settings) -> ModelInputs:
    """:func:`tuner.intake.inspect_onnx` in a limited child process."""
    reply = _run(IntakeOp.inspect, content, input_shapes, None, settings)
    assert reply.inputs is not None
    return reply.inputs


def extract_in_sandbox(
    content: bytes, input_shapes: InputShapes | None, target: dict[str, Any], settings: Settings
) -> list[ExtractedWorkload]:
    """:func:`tuner.intake.extract_workloads` in a limited child process."""
    reply = _run(IntakeOp.extract, content, input_shapes, target, settings)
    assert reply.workloads is not None
    return reply.workloads


def _run(
    op: IntakeOp, content: bytes, shapes: InputShapes | None, target: dict[str, Any] | None, settings: Settings
) -> IntakeReply:
    slots = intake_slots(settings.intake_concurrency)
    if not slots.acquire(timeout=settings.intake_wall_s):
        raise Unavailable(f"model intake is busy ({settings.intake_concurrency} at once, TUNEHUB_INTAKE_CONCURRENCY); retry shortly")
    try:
        return _run_child(op, content, shapes, target, settings)
    finally:
        slots.release()


def _run_child(
    op: IntakeOp, content: bytes, shapes: InputShapes | None, target: dict[str, Any] | None, settings: Settings
) -> IntakeReply:
    request = IntakeRequest(
        op=op,
        size=len(content),
        input_shapes={k: list(v) for k, v in shapes.items()} if shapes else None,
        target=target,
        limits=IntakeLimits.from_settings(settings),
        memory_mb=settings.intake_memory_mb,
        cpu_s=settings.intake_cpu_s,
        parent_pid=os.getpid(),
    )
    env = {  # the service's own settings (database URL, tokens) stay out of the child
        **{k: v for k, v in os.environ.items() if not k.startswith("TUNEHUB_")},
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONDONTWRITEBYTECODE": "1",
        "MALLOC_ARENA_MAX": "2",  # each malloc arena reserves address space that RLIMIT_AS counts
        "TVM_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    with tempfile.TemporaryDirectory(prefix="tunehub-intake-") as cwd, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tuner.intake_sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(request.model_dump_json().encode() + b"\n" + bytes(content), settings.intake_wall_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise TooLarge(
                f"model intake took longer than {settings.intake_wall_s:g} s (TUNEHUB_INTAKE_WALL_S)"
            ) from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        err.seek(max(0, err.seek(0, os.SEEK_END) - _TAIL))
        stderr = err.read().decode(errors="replace")
    if out.strip():
        try:
            reply = IntakeReply.model_validate_json(out.strip().splitlines()[-1])
        except ValueError:
            reply = None
        if reply is not None:
            if reply.error is not None:
                raise (TooLarge if reply.status == 413 else BadInput)(reply.error)
            return reply
    raise _death(proc.returncode, stderr, settings)


def _death(returncode: int, stderr: str, settings: Settings) -> TunehubError:
    """Why the child ended without a reply, as the error the client sees."""
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return TooLarge(f"model intake used more than {settings.intake_cpu_s} CPU seconds (TUNEHUB_INTAKE_CPU_S)")
    if _out_of_memory(stderr):
        return TooLarge(_memory_message(settings.intake_memory_mb))
    how = f"signal {signal.Signals(-returncode).name}" if returncode < 0 else f"exit code {returncode}"
    last = stderr.strip().splitlines()[-3:]
    return BadInput(f"model intake crashed on this model ({how}): {' | '.join(last)[-500:] or 'no message'}")


def _out_of_memory(text: str) -> bool:
    return any(s in text for s in ("MemoryError", "bad_alloc", "Cannot allocate memory", "out of memory"))


def _memory_message(memory_mb: int) -> str:
    return f"the model needs more than the {memory_mb} MiB intake may use (TUNEHUB_INTAKE_MEMORY_MB)"


# --- the child ---------------------------------------------------------------------


def _limit(memory_mb: int, cpu_s: int) -> None:
    """Cap address space at what is mapped now plus ``memory_mb``, CPU at ``cpu_s`` more seconds; no core files."""
    with open("/proc/self/status") as f:
        vm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    memory = vm_kb * 1024 + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(usage.ru_utime + usage.ru_stime) + cpu_s
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _serve(request: IntakeRequest, content: bytes) -> IntakeReply:
    from tuner import intake

    if request.op is IntakeOp.extract:
        from common.tvm_env import prepare_tvm

        prepare_tvm(())
        import onnx  # noqa: F401  (trusted imports before the limits: they are not the model's cost)
        import tvm  # noqa: F401
        from tvm.relax.frontend import onnx as _frontend  # noqa: F401
        from tvm.s_tir import meta_schedule  # noqa: F401
    else:
        import onnx  # noqa: F401
    _limit(request.memory_mb, request.cpu_s)
    try:
        if request.op is IntakeOp.inspect:
            return IntakeReply(inputs=intake.inspect_onnx(content, request.input_shapes, request.limits))
        assert request.target is not None
        return IntakeReply(
            workloads=intake.extract_workloads(content, request.input_shapes, request.target, request.limits)
        )
    except TunehubError as exc:  # intake wraps TVM's std::bad_alloc in BadInput: it is still the memory limit
        if _out_of_memory(exc.detail):
            return IntakeReply(error=_memory_message(request.memory_mb), status=413)
        return IntakeReply(error=exc.detail, status=exc.status_code)
    except MemoryError:
        return IntakeReply(error=_memory_message(request.memory_mb), status=413)
    except Exception as exc:  # noqa: BLE001  (whatever TVM raises is the model's problem, said in a 4xx)
        text = f"{type(exc).__name__}: {exc}"
        if _out_of_memory(text):
            return IntakeReply(error=_memory_message(request.memory_mb), status=413)
        return IntakeReply(error=f"model intake failed: {text[:_TAIL]}", status=422)


def main() -> None:
    from common.processes import die_with_parent

    reply_fd = os.dup(1)
    os.dup2(2, 1)  # whatever TVM or a library prints goes to stderr; stdout carries only the reply
    header = sys.stdin.buffer.readline()
    request = IntakeRequest.model_validate_json(header)
    die_with_parent(signal.SIGKILL, parent_pid=request.parent_pid)
    content = sys.stdin.buffer.read(request.size)
    reply = _serve(request, content)
    with os.fdopen(reply_fd, "w") as out:
        out.write(reply.model_dump_json() + "\n")


if __name__ == "__main__":
    main()
