"""The app factory: ``create_app(settings)`` → a FastAPI app serving ``/api/v1``.

Creating the app does the start-up work eagerly, so a bad database URL or an
unwritable data dir fails before the server binds its port, and the admin
token file exists by the time ``create_app`` returns (``tunehub serve`` can
point at it):

1. create ``data_dir``; migrate the database to head (idempotent, safe for
   replicas starting together);
2. build the engine and the session factory;
3. bootstrap the admin token: ``settings.admin_token`` if set, else the one in
   ``<data_dir>/admin_token``, else a new random one written there with mode
   0600. Only its hash is stored.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI

import common
from db.tokens import ensure_token
from db.engine import make_engine, make_sessionmaker, session_scope
from db.migrate import upgrade
from service import dashboard, metrics
from service.audit import AuditLog
from service.body_limits import JsonBodyLimit
from service.errors import install_error_handlers
from service.limits import ConcurrencyLimit
from service.routes import configs, health, jobs, leases, models, records, runs, tokens, workers
from common.protocol import ErrorBody, Role
from common.settings import Settings, get_settings

log = logging.getLogger("tunehub.service")

API_PREFIX = "/api/v1"
ADMIN_TOKEN_FILE = "admin_token"


def admin_token_path(settings: Settings) -> Path:
    """Where the generated admin token lives (unused when ``settings.admin_token`` is set)."""
    return settings.data_dir / ADMIN_TOKEN_FILE


def _admin_token(settings: Settings) -> str:
    """The configured admin token, else the stored one, else a new one stored with mode 0600."""
    if settings.admin_token:
        return settings.admin_token
    path = admin_token_path(settings)
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    raw = secrets.token_urlsafe(32)
    try:
        # O_EXCL: two services starting on one data dir do not overwrite each other's token.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(raw + "\n")
    log.warning("generated an admin token in %s", path)
    return raw


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    upgrade(url)
    engine = make_engine(url, **settings.pool_options())
    factory = make_sessionmaker(engine)
    with session_scope(factory) as session:
        ensure_token(session, raw=_admin_token(settings), name="admin", role=Role.admin)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="tunehub",
        version=common.__version__,
        description="An autotuning service for Apache TVM: submit models, lease candidates, download best configs.",
        lifespan=lifespan,
        responses={code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422, 503)},
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = factory
    app.state.metrics = metrics.ServiceMetrics()
    app.state.metrics.watch_fleet(factory, worker_seen_s=settings.confirm_worker_seen_s)
    install_error_handlers(app)
    app.add_middleware(JsonBodyLimit, max_bytes=settings.max_json_kb * 1024, max_depth=settings.max_json_depth)
    app.add_middleware(AuditLog)
    app.add_middleware(ConcurrencyLimit, limit=settings.api_max_concurrency)

    api = APIRouter(prefix=API_PREFIX)
    for module in (health, tokens, models, jobs, workers, leases, configs, runs, records):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(metrics.router)  # /metrics at the root, where Prometheus looks; no token
    dashboard.install(app)
    return app
