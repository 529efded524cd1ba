"""SQLAlchemy 2.0 models: the whole schema in one place.

Timestamps are naive UTC, taken from the database's clock where they decide
liveness (``db.engine.db_now``). JSON travels as text columns so SQLite and
PostgreSQL store it the same way.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import false

# SQLite autoincrements only INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # common.protocol.Role
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Model(Base):
    """An uploaded ONNX file, stored once by its sha256."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    format: Mapped[str] = mapped_column(String(16), default="onnx")
    content: Mapped[bytes] = mapped_column(LargeBinary)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    input_shapes_json: Mapped[str] = mapped_column(Text, default="{}")  # {input name: [dims]}
    owner_token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"))  # who uploaded it first
    created_at: Mapped[datetime]


class Workload(Base):
    """One operator's TIR IRModule, shared by every model and job that contains it."""

    __tablename__ = "workloads"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shash: Mapped[str] = mapped_column(String(24), unique=True)  # str(tvm_ffi.structural_hash(mod))
    mod_json: Mapped[str] = mapped_column(Text)  # tvm.ir.save_json(mod)
    args_info_json: Mapped[str] = mapped_column(Text)  # ArgInfo JSON list of the PrimFunc
    flops: Mapped[float | None] = mapped_column(Float)
    # Shape- and dtype-free skeleton key (tuner.transfer.family_key); filled lazily by the tuner.
    family: Mapped[str | None] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime]


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    target_json: Mapped[str] = mapped_column(Text)
    target_key: Mapped[str] = mapped_column(String(1000), index=True)
    trials: Mapped[int] = mapped_column(Integer)
    trials_per_round: Mapped[int] = mapped_column(Integer)
    # False: a workload already tuned for this target key is answered from its stored best, 0 trials.
    retune: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Seconds of the database's clock from started_at; the job ends at it with the best so far.
    time_budget_s: Mapped[float | None] = mapped_column(Float)
    end_reason: Mapped[str | None] = mapped_column(String(40))  # common.protocol.JobEndReason
    estimated_latency_s: Mapped[float | None] = mapped_column(Float)  # sum weight x best-or-estimate, by the tuner
    cost_model: Mapped[str | None] = mapped_column(String(16))  # the search's cost model (tuner.cost_models), once chosen
    status: Mapped[str] = mapped_column(String(16), index=True)  # common.protocol.JobStatus
    error: Mapped[str | None] = mapped_column(Text)
    tuner_owner: Mapped[str | None] = mapped_column(String(200))
    tuner_heartbeat_at: Mapped[datetime | None]
    owner_token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"))  # who may cancel it (and admins)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    tasks: Mapped[list[Task]] = relationship(back_populates="job", order_by="Task.id")


class Task(Base):
    """A workload inside one job, with its weight (how often the model calls it)."""

    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("job_id", "workload_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"))
    name: Mapped[str] = mapped_column(String(300))
    weight: Mapped[int] = mapped_column(Integer)
    # The tuner's scheduler, as it last decided: the task's part of the model's time and why.
    share: Mapped[float | None] = mapped_column(Float)
    why: Mapped[str | None] = mapped_column(String(40))  # common.protocol.TaskReason

    job: Mapped[Job] = relationship(back_populates="tasks")
    workload: Mapped[Workload] = relationship()


class Worker(Base):
    __tablename__ = "workers"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"))
    hardware_json: Mapped[str] = mapped_column(Text, default="{}")
    target_json: Mapped[str] = mapped_column(Text)
    target_key: Mapped[str] = mapped_column(String(1000), index=True)
    registered_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    calibration_json: Mapped[str | None] = mapped_column(Text)  # common.protocol.Calibration, as last reported
    suspect_reason: Mapped[str | None] = mapped_column(Text)  # set when one of its winners failed confirmation
    # Under emulation (qemu-user): its measurements prove the path but never rank (db.ranking).
    emulated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Lease(Base):
    """A worker's time-limited claim on a batch of candidates."""

    __tablename__ = "leases"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    released_at: Mapped[datetime | None]


class Candidate(Base):
    """One schedule (a MetaSchedule trace) for one workload of one task, in the queue."""

    __tablename__ = "candidates"
    __table_args__ = (Index("ix_candidates_queue", "target_key", "state", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"))
    target_key: Mapped[str] = mapped_column(String(1000))
    trace_json: Mapped[str] = mapped_column(Text)
    round: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))  # common.protocol.CandidateState
    lease_id: Mapped[int | None] = mapped_column(ForeignKey("leases.id"), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # times leased
    # A re-measurement of that measurement's trace (db.confirmation), leasable by any worker but this one.
    confirms_measurement_id: Mapped[int | None] = mapped_column(BigId)  # no FK: measurements refer here
    exclude_worker_id: Mapped[int | None] = mapped_column(BigId)
    # Adapted from another workload of the family (tuner.transfer), not found by this workload's search.
    transferred: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime]


class Measurement(Base):
    """The outcome of one candidate on one worker: run_secs or an error. One per candidate."""

    __tablename__ = "measurements"
    __table_args__ = (Index("ix_measurements_best", "workload_id", "target_key", "mean_secs"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), unique=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"))
    target_key: Mapped[str] = mapped_column(String(1000))
    run_secs_json: Mapped[str | None] = mapped_column(Text)
    mean_secs: Mapped[float | None] = mapped_column(Float)  # None when error
    error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(16))  # common.protocol.ErrorKind, with error
    # Measured while the worker was degraded (calibration) or disturbed (CPU interference).
    flagged: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    confirmation: Mapped[str | None] = mapped_column(String(16))  # db.confirmation.Confirmation; None: not asked
    # The measuring worker's TVM version (its hardware["tvm"]); None: stored before versions were kept.
    tvm_version: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]

    candidate: Mapped[Candidate] = relationship()


class TunerRound(Base):
    """One batch a tuner queued, with the seconds its search took to propose it (read by ``GET /metrics``)."""

    __tablename__ = "tuner_rounds"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    round: Mapped[int] = mapped_column(Integer)
    candidates: Mapped[int] = mapped_column(Integer)
    generation_s: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]


class CostModelVersion(Base):
    """One trained XGBoost cost model of a target key (``cost_model.store``); the highest version is current."""

    __tablename__ = "cost_models"
    __table_args__ = (UniqueConstraint("target_key", "version"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    target_key: Mapped[str] = mapped_column(String(1000), index=True)
    version: Mapped[int] = mapped_column(Integer)
    n_samples: Mapped[int] = mapped_column(Integer)  # measurements it has been trained on, in all
    full_samples: Mapped[int] = mapped_column(Integer)  # of which in its last training from scratch
    max_measurement_id: Mapped[int] = mapped_column(BigInteger)  # the newest measurement it has seen
    meta_json: Mapped[str] = mapped_column(Text, default="{}")  # feature layout, params, training kind
    blob: Mapped[bytes] = mapped_column(LargeBinary)  # xgboost Booster.save_raw("ubj"), never pickle
    created_at: Mapped[datetime]


class CostModelEvaluation(Base):
    """One leave-one-model-out evaluation of a target key (``cost_model.leave_out``); the newest decides ``auto``."""

    __tablename__ = "cost_model_evaluations"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    target_key: Mapped[str] = mapped_column(String(1000), index=True)
    tunehub_wins: Mapped[bool] = mapped_column(Boolean)
    report_json: Mapped[str] = mapped_column(Text)  # the scores the verdict was drawn from
    created_at: Mapped[datetime]
