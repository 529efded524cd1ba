"""A tunehub service and its workers as local processes: what the demo, the benches and the e2e tests start.

:class:`Harness` owns one data dir, one admin token and a free loopback port;
it starts ``tunehub serve`` (with or without its tuner), API replicas,
tuners and ``tunehub worker`` processes, each logging to ``<log_dir>/<name>.log``,
waits for observable states (the API answers, workers registered) with
deadlines, and stops everything on exit. :func:`running` is the common case:
a service and N registered workers in a ``with`` block.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.client import TunehubClient
from common.processes import free_port, spawn, stop, wait_healthy


@dataclass
class Harness:
    """A service (+ tuner) and workers on loopback, restartable by name."""

    workdir: Path
    database_url: str = ""  # empty: SQLite under data_dir
    overrides: dict[str, str] = field(default_factory=dict)  # extra TUNEHUB_* for every process
    log_dir: Path | None = None  # default: workdir
    port: int = field(default_factory=free_port)
    admin: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    worker_names: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.log_dir = Path(self.log_dir or self.workdir)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # --- where things are -------------------------------------------------------

    @property
    def server(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "tunehub.db"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.db_path}"

    def env(self) -> dict[str, str]:
        """The TUNEHUB_* environment every process of this harness gets."""
        return {
            "TUNEHUB_DATA_DIR": str(self.data_dir),
            "TUNEHUB_ADMIN_TOKEN": self.admin,
            "TUNEHUB_PORT": str(self.port),
            "TUNEHUB_DATABASE_URL": self.database_url,  # empty means the embedded SQLite, whatever the shell says
            **self.overrides,
        }

    def log(self, name: str) -> Path:
        assert self.log_dir is not None
        return self.log_dir / f"{name}.log"

    def logs(self, tail_chars: int = 4000) -> str:
        """The end of every process log, for a failure message."""
        assert self.log_dir is not None
        return "\n".join(f"--- {p.name} ---\n{p.read_text()[-tail_chars:]}" for p in sorted(self.log_dir.glob("*.log")))

    def client(self) -> TunehubClient:
        """An admin client of the main service."""
        return TunehubClient(self.server, self.admin)

    # --- processes --------------------------------------------------------------

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """``python -m tunehub <args>`` as process ``name`` (a name reused replaces the record of the old one)."""
        proc = spawn(args, env=self.env(), log=self.log(name))
        self.procs[name] = proc
        return proc

    def start_service(self, *, tuner: bool = True, timeout_s: float = 120.0) -> None:
        """``tunehub serve`` on this harness's port; returns once it answers."""
        proc = self.start("service", ["serve"] + ([] if tuner else ["--no-tuner"]))
        wait_healthy(self.server, timeout_s=timeout_s, proc=proc)

    def start_replica(self, name: str, port: int | None = None, *, wait: bool = True, timeout_s: float = 120.0) -> str:
        """Another API-only service (``serve --no-tuner``) on the same database; returns its URL."""
        port = port or free_port()
        proc = self.start(name, ["serve", "--no-tuner", "--port", str(port)])
        url = f"http://127.0.0.1:{port}"
        if wait:
            wait_healthy(url, timeout_s=timeout_s, proc=proc)
        return url

    def start_worker(self, name: str = "worker", *, token: str | None = None, args: Sequence[str] = ()) -> str:
        """Start ``tunehub worker`` named ``name`` (a new worker token unless ``token``); returns the token."""
        if token is None:
            with self.client() as client:
                token = client.create_token(name, "worker").token
        self.start(name, ["worker", "--server", self.server, "--token", token, "--name", name, *args])
        self.worker_names.add(name)
        return token

    def wait_for_workers(self, count: int = 1, *, timeout_s: float = 120.0, poll_s: float = 0.5) -> list[Any]:
        """Block until ``count`` workers are registered; returns them (``WorkerPublic``).

        Fails at once, naming its log, when a started worker process has exited.
        """
        deadline = time.monotonic() + timeout_s
        with self.client() as client:
            while True:
                workers = client.workers()
                if len(workers) >= count:
                    return workers
                for name in self.worker_names:
                    proc = self.procs[name]
                    if proc.poll() is not None:
                        raise RuntimeError(f"worker {name} exited with code {proc.returncode}; see {self.log(name)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{len(workers)} of {count} workers registered within {timeout_s:.0f} s; "
                                       f"see the logs in {self.log_dir}")
                time.sleep(poll_s)

    def stop(self, name: str) -> int | None:
        """Stop one process (SIGTERM, then SIGKILL); idempotent."""
        return stop(self.procs[name])

    def stop_all(self) -> None:
        """Workers first (they report what they hold), then the rest; idempotent."""
        for name in sorted(self.procs, key=lambda n: n == "service"):
            stop(self.procs[name])


@contextmanager
def running(
    workdir: Path,
    *,
    tuner: bool = True,
    workers: int = 1,
    worker_args: Sequence[str] = (),
    overrides: dict[str, str] | None = None,
    database_url: str = "",
    log_dir: Path | None = None,
    timeout_s: float = 120.0,
    name: str = "worker",
) -> Iterator[Harness]:
    """A healthy service (with its tuner unless ``tuner=False``) and ``workers`` registered workers.

    Workers are named ``name``, ``name-2``, ...; everything stops when the block ends.
    """
    harness = Harness(workdir, database_url=database_url, overrides=dict(overrides or {}), log_dir=log_dir)
    with harness:
        harness.start_service(tuner=tuner, timeout_s=timeout_s)
        for i in range(workers):
            harness.start_worker(name if i == 0 else f"{name}-{i + 1}", args=worker_args)
        if workers:
            harness.wait_for_workers(workers, timeout_s=timeout_s)
        yield harness
