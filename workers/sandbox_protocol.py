"""The messages between the worker and its sandbox processes (one JSON object per line).

Requests are told apart by ``op``, replies by ``reply``; both ends validate what
they read with these models, so a malformed line is a protocol error at the
boundary rather than a ``KeyError`` deep inside. Every reply echoes the request's ``id``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from common.protocol import ErrorKind

TargetJSON = dict[str, Any]
PARENT_PID_ENV = "TUNEHUB_SANDBOX_PARENT_PID"
"""Set by the client to its pid: a sandbox whose parent is already gone exits at once."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int | None = None


class TimingFields(BaseModel):
    """TVM's ``time_evaluator`` settings plus ``warmup`` and ``cache_flush`` (see ``workers.timing.Timing``)."""

    number: int = 3
    repeat: int = 1
    min_repeat_ms: int = 100
    warmup: int = 0
    cache_flush: bool = False


class DeviceBinary(BaseModel):
    """A CUDA binary a builder compiled for the runner to load instead of compiling again."""

    sha256: str
    path: str
    format: str
    bytes: int


# --- requests -------------------------------------------------------------------


class WorkloadRequest(_Message):
    workload_hash: str = Field(min_length=1)
    mod_json: str | None = Field(None, description="Omitted once the process holds the workload.")
    target: TargetJSON
    check: bool = True


class MeasureRequest(WorkloadRequest, TimingFields):
    """Build, check and time in one process, nothing on disk."""

    op: Literal["measure"] = "measure"
    trace: Any


class BuildRequest(WorkloadRequest):
    """Build a candidate and export it to files named ``out.*``."""

    op: Literal["build"] = "build"
    trace: Any
    out: str


class RunRequest(WorkloadRequest, TimingFields):
    """Load a builder's artifact, check it against the reference and time it."""

    op: Literal["run"] = "run"
    artifact: str
    check_artifact: str | None = None
    timed_args: list[tuple[str, str, list[int]]]
    device_binaries: list[DeviceBinary] = []


class CalibrateRequest(_Message):
    op: Literal["calibrate"] = "calibrate"
    target: TargetJSON
    repeat: int = 7
    min_repeat_ms: int = 10


class PingRequest(_Message):
    op: Literal["ping"] = "ping"


class CrashRequest(_Message):
    """Test only (``TUNEHUB_SANDBOX_TEST_OPS=1``): kill the sandbox with ``signal``."""

    op: Literal["crash"] = "crash"
    signal: str = "SIGSEGV"


class SleepRequest(_Message):
    """Test only (``TUNEHUB_SANDBOX_TEST_OPS=1``): hang for ``seconds``."""

    op: Literal["sleep"] = "sleep"
    seconds: float = 3600.0


Request = Annotated[
    Union[MeasureRequest, BuildRequest, RunRequest, CalibrateRequest, PingRequest, CrashRequest, SleepRequest],
    Field(discriminator="op"),
]
REQUEST = TypeAdapter(Request)

# --- replies --------------------------------------------------------------------


class Ready(_Message):
    """The first line a sandbox prints once TVM is imported."""

    reply: Literal["ready"] = "ready"
    pid: int
    tvm: str
    cpus: list[int]


class Failed(_Message):
    """A failure, ``"<stage>: <reason>"``; ``missing_workload`` asks for the request again with ``mod_json``."""

    reply: Literal["failed"] = "failed"
    error: str
    error_kind: ErrorKind
    missing_workload: bool = False
    t_start: float | None = None
    t_end: float | None = None


class Built(_Message):
    """Where a build was written and whether this machine can run it."""

    reply: Literal["built"] = "built"
    artifact: str
    check_artifact: str | None = None
    timed_args: list[tuple[str, str, list[int]]]
    runnable: bool = True
    linked: bool = True
    device_binaries: list[DeviceBinary] = []
    note: str | None = None
    t_start: float | None = None
    t_end: float | None = None


class Timed(_Message):
    """Every repeat's seconds and the share of our CPUs other processes used meanwhile."""

    reply: Literal["timed"] = "timed"
    run_secs: list[float] = Field(min_length=1)
    others_busy: float | None = None
    cuda_binaries: dict[str, int] | None = Field(None, description="CUDA: builders' binaries used / compiled here.")
    t_start: float | None = None
    t_end: float | None = None


class Calibrated(_Message):
    reply: Literal["calibrated"] = "calibrated"
    secs: float = Field(description="The median repeat.")
    results: list[float]
    others_busy: float | None = None


class Pong(_Message):
    reply: Literal["pong"] = "pong"
    ok: bool = True


Reply = Annotated[Union[Ready, Failed, Built, Timed, Calibrated, Pong], Field(discriminator="reply")]
REPLY = TypeAdapter(Reply)


def failed(kind: ErrorKind, message: str, **extra: Any) -> Failed:
    return Failed(error=message, error_kind=kind, **extra)
