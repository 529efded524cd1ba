"""A real tunehub service under uvicorn on a free loopback port, for the service tests."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_sessionmaker, session_scope
from db.models import Base
from service.app import admin_token_path, create_app
from common.settings import Settings

from tests_support import PG_ADMIN_URL
API = "/api/v1"


@dataclass
class Live:
    """A running service and what a test needs to talk to it and to look behind it."""

    base_url: str
    db_url: str
    settings: Settings
    admin_token: str
    factory: sessionmaker[Session]
    _clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = httpx.Client(base_url=self.base_url + API, headers=headers, timeout=120)
        self._clients.append(c)
        return c

    @property
    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def token(self, role: str, name: str | None = None) -> str:
        r = self.admin.post("/tokens", json={"name": name or f"{role}-{uuid.uuid4().hex[:6]}", "role": role})
        assert r.status_code == 201, r.text
        return r.json()["token"]

    @contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.factory) as s:
            yield s

    def counts(self) -> dict[str, int]:
        """Rows per table: 'nothing stored changes' is counts() before == after."""
        with self.session() as s:
            tables = Base.metadata.tables.items()
            return {name: s.execute(select(func.count()).select_from(t)).scalar_one() for name, t in tables}

    def close(self) -> None:
        for c in self._clients:
            c.close()


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the port is ours before uvicorn starts: no race for it
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + API + "/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"the service did not answer on {base} within 30 s")
        time.sleep(0.02)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@contextmanager
def running(db_url: str, data_dir: Path) -> Iterator[Live]:
    settings = Settings(data_dir=data_dir, database_url=db_url, admin_token=None, lease_ttl_s=60.0)
    with serve(create_app(settings)) as base:
        engine = make_engine(db_url)
        live = Live(
            base_url=base,
            db_url=db_url,
            settings=settings,
            admin_token=admin_token_path(settings).read_text().strip(),
            factory=make_sessionmaker(engine),
        )
        try:
            yield live
        finally:
            live.close()
            engine.dispose()


@contextmanager
def module_pg_db(template: str) -> Iterator[str]:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"tunehub_m_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


ROOT = Path(__file__).resolve().parents[2]
MLP_ONNX = ROOT / "examples" / "mlp.onnx"


def make_models():  # type: ignore[no-untyped-def]
    """examples/make_models.py as a module (examples/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tunehub_make_models", ROOT / "examples" / "make_models.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
