"""The web dashboard at ``/dashboard``: jobs, tuning curves, workers and workloads, live.

Everything it serves ships in this package (templates, script, styles and the
vendored uPlot), so it works with no network beyond the service. ``install``
adds its routes, static files and the login redirect; pages carry a
strict Content-Security-Policy (``auth.PAGE_HEADERS``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.dashboard import api, auth, pages


def install(app: FastAPI) -> None:
    """Serve the dashboard from ``app`` under ``/dashboard``."""
    app.include_router(auth.router)
    app.include_router(pages.router)
    app.include_router(api.router)
    app.mount(auth.PREFIX + "/static", StaticFiles(directory=Path(__file__).parent / "static"), name="dashboard-static")
    app.add_exception_handler(auth.LoginRequired, auth.login_redirect)  # type: ignore[arg-type]

