"""Wire models shared by the service, the CLI and the workers (JSON over HTTP).

Separate models for what a client sends (``*Create``/``*Request``) and what the
service returns (``*Public``/``*Response``). Nothing here imports TVM: traces,
workloads and targets travel as plain JSON.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

TargetJSON = dict[str, Any]
"""A TVM target as a JSON dict, e.g. {"kind": "llvm", "mcpu": "znver3", "num-cores": 2}."""

MAX_ID = 2**63 - 1
"""The largest id either database stores (a signed 64-bit integer)."""
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
"""A row id on the wire: anything outside 1..2**63-1 is a 422, never a database overflow."""


class Role(str, Enum):
    admin = "admin"
    user = "user"
    worker = "worker"


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


class CandidateState(str, Enum):
    pending = "pending"
    leased = "leased"
    done = "done"
    cancelled = "cancelled"


# --- tokens ---------------------------------------------------------------


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    role: Role


class TokenCreated(BaseModel):
    id: int
    name: str
    role: Role
    token: str = Field(description="Shown once; only its hash is stored.")


# --- models ---------------------------------------------------------------


class ModelPublic(BaseModel):
    id: int
    name: str
    sha256: str
    size_bytes: int
    input_shapes: dict[str, list[int]]
    created_at: datetime
    created: bool = Field(True, description="False when the same bytes were already stored.")


# --- jobs -----------------------------------------------------------------


MAX_TIME_BUDGET_S = 7 * 24 * 3600
"""The longest time budget a job may ask for (a week)."""

DEFAULT_TRIALS = 64
"""A job's trials when it gives neither trials nor a time budget."""

MAX_TRIALS = 100_000
"""The most trials a job may ask for; a job with only a time budget gets this many."""


class TaskReason(str, Enum):
    """Why a task has the trials it has: the scheduler's last word on it (shown by ``tunehub status``)."""

    waiting = "waiting for its first batch"
    first_batch = "first batch"
    largest_gain = "largest expected gain"
    catching_up = "behind a task with a larger share"
    converged = "converged"
    negligible = "under 1 % of model"
    no_valid = "no valid schedule"
    exhausted = "search space exhausted"
    answered = "answered from database"


class JobEndReason(str, Enum):
    """Why a finished job stopped searching."""

    trials_spent = "trial budget spent"
    time_budget = "time budget reached"
    converged = "every task converged"
    exhausted = "every search space exhausted"
    answered = "answered from database"
    no_tasks = "nothing to tune"


class JobCreate(BaseModel):
    model_id: Id
    target: TargetJSON
    trials: int | None = Field(
        None, ge=1, le=MAX_TRIALS,
        description=f"Measurement budget across all tasks; default {DEFAULT_TRIALS}, or unbounded "
        "(the time budget decides) when only time_budget_s is given.",
    )
    time_budget_s: float | None = Field(
        None, ge=1, le=MAX_TIME_BUDGET_S,
        description="Wall-clock budget from the job's start (the database's clock); the job ends at it "
        "with the best schedules found so far. Alone or with trials: whichever is spent first ends the job.",
    )
    trials_per_round: int | None = Field(
        None, ge=1, le=1024, description="Candidates per batch after a task's first; default from settings."
    )
    retune: bool = Field(
        False,
        description="Search again workloads already tuned for this target; by default they are answered "
        "from the database's best config at once, with no trials.",
    )

    def resolved_trials(self) -> int:
        """The trial budget to store: as given, else unbounded under a time budget, else the default."""
        if self.trials is not None:
            return self.trials
        return MAX_TRIALS if self.time_budget_s is not None else DEFAULT_TRIALS


class TaskPublic(BaseModel):
    id: int
    name: str
    workload_hash: str
    weight: int
    flops: float | None = None
    trials_done: int
    trials_valid: int
    best_latency_s: float | None
    share: float | None = Field(
        None, description="The task's part of the model's estimated time (weight x best, or x estimate "
        "before it is measured), 0..1, as the scheduler last saw it."
    )
    why: TaskReason | None = Field(None, description="Why the task has the trials it has (the scheduler's last choice).")


class JobPublic(BaseModel):
    id: int
    model_id: int
    status: JobStatus
    target: TargetJSON
    target_key: str
    trials: int
    trials_done: int
    time_budget_s: float | None = None
    end_reason: JobEndReason | None = Field(None, description="Why a finished job stopped searching.")
    estimated_latency_s: float | None = Field(
        None, description="The model's latency as the scheduler estimates it: sum of weight x best (or estimate)."
    )
    cost_model: str | None = Field(
        None, description="The cost model the job's search uses (metaschedule or tunehub); None until it starts."
    )
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    tasks: list[TaskPublic] = []


# --- workers and leases ---------------------------------------------------


class Calibration(BaseModel):
    """A worker's pulse: the time of a fixed small matmul against the fastest it has shown.

    ``degraded`` (ratio above tolerance) means the machine is throttled or
    overloaded now; results measured then are flagged.
    """

    status: str = Field(max_length=32, description="ok, degraded, or unknown (no calibration could run).")
    ratio: float | None = Field(None, description="latest_s / baseline_s.")
    baseline_s: float | None = Field(None, description="The fastest calibration seen recently.")
    latest_s: float | None = None
    tolerance: float | None = Field(None, description="Degraded when ratio exceeds this.")
    samples: int = Field(0, ge=0, le=2**31 - 1)
    detail: str | None = Field(None, max_length=4000, description="Why the status is unknown.")


class WorkerRegister(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    hardware: dict[str, Any] = Field(default_factory=dict, description="Free-form: cpu, cores, gpu, os...")
    target: TargetJSON
    calibration: Calibration | None = None
    emulated: bool = Field(
        False, description="Runs under emulation (e.g. qemu-user): its timings never rank as best for the target."
    )


class WorkerPublic(BaseModel):
    id: int
    name: str
    target: TargetJSON
    target_key: str
    calibration: Calibration | None = Field(None, description="As the worker last reported it.")
    suspect: bool = Field(False, description="One of its winners was re-measured elsewhere and disagreed.")
    suspect_reason: str | None = None
    emulated: bool = Field(False, description="Its timings come from emulation and never rank as best.")


class LeaseRequest(BaseModel):
    worker_id: Id
    max_candidates: int = Field(8, ge=1, le=1024)


class CandidateWire(BaseModel):
    id: int
    workload_hash: str
    trace: Any = Field(description="MetaSchedule trace JSON: [instructions, decisions].")
    args_info: Any = Field(description="MetaSchedule ArgInfo JSON list, e.g. [['TENSOR','float32',[128,128]], ...]")


class LeaseResponse(BaseModel):
    lease_id: int | None = Field(description="None when no work is waiting for this worker's target.")
    expires_at: datetime | None = None
    ttl_s: float
    target: TargetJSON
    candidates: list[CandidateWire] = []
    workloads: dict[str, str] = Field(
        default_factory=dict, description="workload hash -> tvm.ir.save_json(IRModule), one per workload in the batch."
    )


class HeartbeatRequest(BaseModel):
    worker_id: Id


class HeartbeatResponse(BaseModel):
    lease_id: int
    expires_at: datetime


class ErrorKind(str, Enum):
    """Why a candidate has no run time (the message beside it says the rest)."""

    build = "build"  # the workload, the trace, the build or loading the artifact failed
    unsupported = "unsupported"  # built, but this worker cannot run it (e.g. cross-compiled only)
    wrong_output = "wrong_output"  # ran, but its output differs from the untuned build's
    run = "run"  # the run itself raised
    crash = "crash"  # the sandbox process died under it
    timeout = "timeout"  # no answer within the time limit
    rejected = "rejected"  # the service refused the reported time: implausible, TVM's failed stub, or unchecked


class MeasurementOutcome(BaseModel):
    """The one "run_secs or error" record: what measuring one candidate gave.

    Exactly one of ``run_secs`` / ``error`` is set; ``error_kind`` goes with ``error``.
    Used by the sandbox client, the worker's measurer, the wire, the queue and the search.
    """

    model_config = ConfigDict(frozen=True)

    run_secs: list[float] | None = Field(
        None, max_length=10_000, description="All repeats, seconds; None when error is set."
    )
    error: str | None = Field(
        None, max_length=100_000, description="Why the candidate failed: build error, wrong output, crash, timeout."
    )
    error_kind: ErrorKind | None = Field(None, description="The class of the failure; set with error.")
    flagged: bool = Field(
        False, description="Measured while the worker's calibration said degraded: ranked after unflagged results."
    )
    output_checked: bool = Field(
        True, description="False when the output was not compared with the untuned build's: such a time never counts."
    )

    @property
    def valid(self) -> bool:
        return bool(self.run_secs)

    @property
    def mean_secs(self) -> float | None:
        return sum(self.run_secs) / len(self.run_secs) if self.run_secs else None

    @classmethod
    def failed(cls, kind: ErrorKind, message: str) -> "MeasurementOutcome":
        return cls(error=message, error_kind=kind)


class CandidateResult(MeasurementOutcome):
    """One candidate's outcome as a worker reports it."""

    candidate_id: Id


class ResultsReport(BaseModel):
    worker_id: Id
    results: list[CandidateResult] = Field(max_length=1024)
    calibration: Calibration | None = Field(None, description="The worker's calibration when it measured these.")


class ResultsAck(BaseModel):
    accepted: list[int] = Field(description="Candidate ids stored now.")
    ignored: list[int] = Field(description="Duplicate or late reports: already measured or leased to another worker.")


class ReleaseRequest(BaseModel):
    worker_id: Id


class ErrorBody(BaseModel):
    error: str
    detail: str


# --- ad-hoc runs: a user's own MetaSchedule script measuring on the fleet -------------


class RunCreate(BaseModel):
    """Scheduled modules to measure on the fleet's workers for one target (``tunehub.metaschedule.FleetRunner``)."""

    target: TargetJSON | str
    modules: list[str] = Field(min_length=1, max_length=1024, description="tvm.ir.save_json of each scheduled IRModule.")


class RunCreated(BaseModel):
    run_id: int = Field(description="The ad-hoc job holding the candidates.")
    candidate_ids: list[int] = Field(description="One per module, in order.")


class RunResult(BaseModel):
    candidate_id: int
    state: CandidateState
    run_secs: list[float] | None = None
    error: str | None = None


class RunResults(BaseModel):
    results: list[RunResult]


# --- user records: tunehub.metaschedule.Database over HTTP ----------------------------


class UserWorkloadCreate(BaseModel):
    mod_json: str = Field(description="tvm.ir.save_json of the workload's IRModule.")


class UserWorkloadCreated(BaseModel):
    workload_id: int


class UserWorkloadWire(BaseModel):
    id: int = Field(description="The user-workload id (a reader's cursor).")
    workload_id: int
    mod_json: str


class UserRecordCreate(BaseModel):
    workload_id: int
    target_key: str = Field(max_length=1000)
    record_json: str = Field(description="TuningRecord.as_json() as JSON text.")


class UserRecordCreated(BaseModel):
    id: int


class UserRecordWire(BaseModel):
    id: int
    workload_id: int
    record_json: str


class UserRecordCount(BaseModel):
    count: int
