"""Live processes for end-to-end tests: `tunehub serve`, `tunehub tuner`, `tunehub worker`.

Everything is real: uvicorn on a free loopback port, the tuner process, a worker
process with its TVM sandbox, SQLite under tmp_path (``stack``) or a fresh
PostgreSQL database (``pg_stack``), where several API replicas can share it.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.client import TunehubClient
from common.processes import free_port, spawn, stop, wait_healthy


@dataclass
class Stack:
    """A service (+ tuner) and workers on loopback, restartable."""

    tmp: Path
    port: int = field(default_factory=free_port)
    admin: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    database_url: str = ""  # empty: SQLite under data_dir
    overrides: dict[str, str] = field(default_factory=dict)  # extra TUNEHUB_* for every process

    @property
    def server(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.tmp / "data"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "tunehub.db"

    def env(self) -> dict[str, str]:
        return {
            "TUNEHUB_DATA_DIR": str(self.data_dir),
            "TUNEHUB_ADMIN_TOKEN": self.admin,
            "TUNEHUB_PORT": str(self.port),
            "TUNEHUB_DATABASE_URL": self.database_url,
            "TUNEHUB_TUNER_GRACE_S": "4",
            "TUNEHUB_TUNER_HEARTBEAT_S": "1",
            "TUNEHUB_LEASE_TTL_S": "30",
            **self.overrides,
        }

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.db_path}"

    def sql(self, query: str) -> list[tuple]:
        """Rows of one query against the stack's database, either backend."""
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(self.db_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(query))]
        finally:
            engine.dispose()

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        proc = spawn(args, env=self.env(), log=self.log(name))
        self.procs[name] = proc
        return proc

    def start_service(self, *, tuner: bool = True) -> None:
        proc = self.start("service", ["serve"] + ([] if tuner else ["--no-tuner"]))
        wait_healthy(self.server, timeout_s=120, proc=proc)

    def start_replica(self, name: str, port: int | None = None) -> str:
        """Another API-only service (``serve --no-tuner``) on the same database; returns its URL."""
        port = port or free_port()
        proc = self.start(name, ["serve", "--no-tuner", "--port", str(port)])
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, timeout_s=120, proc=proc)
        return url

    def client(self) -> TunehubClient:
        return TunehubClient(self.server, self.admin)

    def start_worker(self, name: str = "worker", *, token: str | None = None, args: list[str] | None = None) -> str:
        """Start ``tunehub worker`` (a new worker token unless ``token``); returns the token."""
        if token is None:
            with self.client() as client:
                token = client.create_token(name, "worker").token
        self.start(name, ["worker", "--server", self.server, "--token", token, "--name", name, *(args or [])])
        return token

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text()[-4000:]}" for p in sorted(self.tmp.glob("*.log")))

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop(proc)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    s.stop_all()


@pytest.fixture
def pg_stack(tmp_path: Path, pg_url: str) -> Iterator[Stack]:
    """A stack on a fresh, migrated PostgreSQL database (skips where no server answers)."""
    s = Stack(tmp_path, database_url=pg_url)
    yield s
    s.stop_all()
