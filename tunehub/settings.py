"""Settings from the environment (``TUNEHUB_`` prefix), validated once.

Constructors take a ``Settings`` object; ``get_settings()`` is cached so tests
can clear it (``get_settings.cache_clear()``) after changing the environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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

    # Clients (CLI, workers): where the service is and who we are.
    server: str = Field("http://127.0.0.1:8470", description="Service URL for the CLI and workers.")
    token: str | None = Field(None, description="API token for the CLI and workers.")

    # Queue
    lease_ttl_s: float = Field(60.0, gt=0, description="A lease expires this long after its last heartbeat.")
    max_lease_candidates: int = Field(64, gt=0)

    # Tuner
    tuner_heartbeat_s: float = Field(5.0, gt=0)
    tuner_grace_s: float = Field(20.0, gt=0, description="A job whose tuner is silent this long is reclaimed.")
    tuner_poll_s: float = Field(0.5, gt=0)
    tuner_max_jobs: int = Field(2, gt=0, description="Jobs one tuner process runs at once.")
    num_trials_per_iter: int = Field(16, gt=0, description="Candidates per task per search round.")
    search_threads: int = Field(2, gt=0)

    @field_validator("database_url")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v or None

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tunehub.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
