"""Settings from the environment (``TUNEHUB_`` prefix), validated once.

Constructors take a ``Settings`` object; ``get_settings()`` is cached so tests
can clear it (``get_settings.cache_clear()``) after changing the environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEHUB_", extra="ignore")

    data_dir: Path = Field(Path("tunehub-data"), description="Where the SQLite file and the admin token live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; unset means SQLite at <data_dir>/tunehub.db."
    )
    admin_token: str | None = Field(
        None, description="Admin token; unset means one is generated into <data_dir>/admin_token."
    )
    host: str = "127.0.0.1"
    port: int = 8470

    api_max_concurrency: int = Field(
        32, ge=1, description="Requests one service process handles at once; more wait in line (service/limits.py)."
    )

    # Database connection pool, per process (a service replica, a tuner). Keep
    # replicas x (pool + overflow) under the server's max_connections.
    db_pool_size: int = Field(10, ge=1, description="Connections kept open per process.")
    db_max_overflow: int = Field(20, ge=0, description="Extra connections opened under load, closed when idle.")
    db_pool_timeout_s: float = Field(30.0, gt=0, description="How long a request waits for a free connection.")
    db_pool_recycle_s: float | None = Field(
        None, gt=0, description="Reopen connections older than this (behind proxies that cut idle ones)."
    )

    # Clients (CLI, workers): where the service is and who we are.
    server: str = Field("http://127.0.0.1:8470", description="Service URL for the CLI and workers.")
    token: str | None = Field(None, description="API token for the CLI and workers.")

    max_model_mb: float = Field(1024.0, gt=0, description="Largest ONNX upload accepted (MiB).")

    # Queue
    lease_ttl_s: float = Field(60.0, gt=0, description="A lease expires this long after its last heartbeat.")
    max_lease_candidates: int = Field(64, gt=0)

    # Trust (README "Trust model"): bounded bodies, plausible results, confirmed winners
    max_json_kb: int = Field(16 * 1024, ge=1, description="Largest JSON request body accepted (KiB); 413 above.")
    max_json_depth: int = Field(32, ge=2, description="Deepest JSON nesting accepted in a request body; 422 above.")
    confirm_winners: bool = Field(
        True, description="Re-measure a would-be best result on another worker of its target key before it is served."
    )
    confirm_tolerance: float = Field(
        1.5, gt=1.0, description="A confirmation disagrees when the two means differ by more than this factor."
    )
    confirm_worker_seen_s: float = Field(
        600.0, gt=0, description="Another worker counts for confirmation if it was seen this recently."
    )
    peak_gflops_per_core: float = Field(
        1000.0, gt=0, description="CPU peak per core (GFLOP/s) for the plausibility floor; generous on purpose."
    )
    peak_gflops: dict[str, float] = Field(
        default_factory=dict,
        description="Peak GFLOP/s by target key or target kind, overriding the derived one (JSON object).",
    )

    # Tuner
    tuner_heartbeat_s: float = Field(5.0, gt=0)
    tuner_grace_s: float = Field(20.0, gt=0, description="A job whose tuner is silent this long is reclaimed.")
    tuner_poll_s: float = Field(0.5, gt=0)
    tuner_max_jobs: int = Field(2, gt=0, description="Jobs one tuner process runs at once.")
    num_trials_per_iter: int = Field(
        32, gt=0,
        description="Candidates per task per search round. A round costs about as much to search as 32 "
        "candidates take to measure on a 2-core worker, so search and measurement keep pace in the pipeline.",
    )
    search_threads: int = Field(2, gt=0)
    search_population: int = Field(
        512, ge=16, le=4096,
        description="Schedules the evolutionary search keeps per task round (MetaSchedule's default 512); "
        "smaller rounds come faster and search less widely.",
    )
    cost_model: Literal["metaschedule", "tunehub", "auto"] = Field(
        "metaschedule",
        description="Search cost model: MetaSchedule's XGBModel (default), tunehub's database-trained ensemble "
        "(falls back to MetaSchedule's for workloads it is unsure of), or auto: tunehub's for a target key only "
        "when its latest leave-one-model-out evaluation (`tunehub cost-model eval --record`) says it ranks better.",
    )
    tuner_nice: int = Field(
        10, ge=0, le=19,
        description="OS niceness of the tuner process: its search is throughput work, a worker's timing run on "
        "the same machine is not, so the OS gives the tuner what the worker leaves.",
    )
    tuner_pipeline_depth: int = Field(
        2, ge=1, description="Batches of a job queued at once: the next is generated while workers measure "
        "the current one. 1 when the tuner shares its cores with the only worker (timings stay clean)."
    )

    # Workers (`tunehub worker`; every one is also a command-line option)
    worker_build_timeout_s: float = Field(
        30.0, gt=0, description="A candidate's build is killed after this long (MetaSchedule's LocalBuilder default)."
    )
    worker_run_timeout_s: float = Field(
        60.0, gt=0, description="A candidate's check and timing is killed after this long (twice for a workload's first)."
    )
    worker_build_workers: int | None = Field(
        None, ge=0, description="Builder processes per device; 0 builds in the runner; unset: one per core, at most 4."
    )
    worker_number: int = Field(1, ge=1, description="time_evaluator number (runs averaged per repeat).")
    worker_repeat: int = Field(5, ge=1, description="Repeats per candidate; all are reported.")
    worker_min_repeat_ms: int = Field(20, ge=0, description="time_evaluator min_repeat_ms.")
    worker_warmup: int = Field(1, ge=0, description="Untimed runs before timing.")
    worker_cache_flush: bool = Field(True, description="Flush CPU caches before each repeat (CPU targets).")
    worker_pin: bool = Field(True, description="Pin one measuring thread to each of the target's cores.")
    worker_calibrate_every_s: float = Field(
        30.0, ge=0, description="Re-time the calibration kernel before a batch this often; 0 turns calibration off."
    )
    worker_calibration_tolerance: float = Field(
        1.3, gt=1.0, description="Degraded when the calibration kernel runs this many times slower than its best."
    )
    worker_interference_tolerance: float = Field(
        0.2, ge=0, description="Flag a result when other processes used more than this share of its cores."
    )
    worker_interference_retries: int = Field(
        2, ge=0, description="Times a disturbed run is timed again, after waiting for quiet CPUs; the least disturbed counts."
    )
    worker_quiet_wait_s: float = Field(
        10.0, ge=0, description="How long a disturbed run waits for other processes to leave its CPUs alone."
    )
    worker_cuda_compiler: str = Field("auto", description="auto, nvcc or nvrtc: how CUDA source becomes a binary.")

    # Model intake: untrusted ONNX is parsed, converted and folded in a child process under these limits.
    intake_memory_mb: int = Field(
        3072, ge=64, description="Memory (RLIMIT_AS) the intake process may add to what it starts with; more is a 413."
    )
    intake_cpu_s: int = Field(300, ge=1, description="CPU seconds (RLIMIT_CPU) one intake may use; more is a 413.")
    intake_wall_s: float = Field(
        900.0, gt=0, description="Wall-clock seconds one intake may take (a safety net on a busy machine); more is a 413."
    )
    intake_concurrency: int = Field(
        2, ge=1, description="Intake processes one service process runs at once; further uploads and jobs wait their turn."
    )
    intake_max_dim: int = Field(2**31 - 1, ge=1, description="Largest dimension of any tensor of a model.")
    intake_max_tensor_elements: int = Field(
        2**28, ge=1, description="Most elements in any one tensor of a model (inputs, weights, intermediates)."
    )
    intake_max_nodes: int = Field(100_000, ge=1, description="Most nodes in a model's graph (subgraphs included).")
    intake_max_tasks: int = Field(1000, ge=1, description="Most tuning tasks one model may split into.")
    intake_max_task_flops: float = Field(
        1e13, gt=0, description="Most floating-point operations one call of one task may take."
    )

    @field_validator("database_url")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v or None

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tunehub.db').resolve()}"

    def pool_options(self) -> dict[str, Any]:
        """Keyword arguments for ``db.engine.make_engine``."""
        return {
            "pool_size": self.db_pool_size,
            "max_overflow": self.db_max_overflow,
            "pool_timeout_s": self.db_pool_timeout_s,
            "pool_recycle_s": self.db_pool_recycle_s,
        }


@lru_cache
def get_settings() -> Settings:
    return Settings()
