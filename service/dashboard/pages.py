"""The dashboard's HTML pages: jobs, one job, workers, workloads per target.

Jinja2 renders each page's frame (navigation, headings, filters, empty tables
and plot areas) with the data endpoint it polls in ``data-api``; the one script
(``static/dashboard.js``) fills and refreshes the tables and plots from that
JSON, so a page stays live without reloads and formats numbers in one place.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from common.protocol import JobStatus
from db import dashboard_queries as q
from service.dashboard.auth import PAGE_HEADERS, PREFIX, PageViewer, templates
from service.deps import SessionDep

router = APIRouter(prefix=PREFIX, include_in_schema=False)

POLL_MS = 3000
"""How often a page refreshes its data."""


def _page(request: Request, name: str, page: str, api: str, **context: object) -> HTMLResponse:
    base = {"page": page, "api": api, "poll_ms": POLL_MS, "statuses": [s.value for s in JobStatus]}
    return templates.TemplateResponse(request, name, {**base, **context}, headers=PAGE_HEADERS)


@router.get("")
def index() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/jobs", status_code=303)


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, _: PageViewer) -> HTMLResponse:
    return _page(request, "jobs.html", "jobs", f"{PREFIX}/api/jobs")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: Annotated[int, Path(ge=1, le=2**62)], _: PageViewer) -> HTMLResponse:
    return _page(request, "job.html", "job", f"{PREFIX}/api/jobs/{job_id}", job_id=job_id)


@router.get("/workers", response_class=HTMLResponse)
def workers_page(request: Request, _: PageViewer) -> HTMLResponse:
    return _page(request, "workers.html", "workers", f"{PREFIX}/api/workers")


@router.get("/workloads", response_class=HTMLResponse)
def workloads_page(
    request: Request,
    session: SessionDep,
    _: PageViewer,
    target: Annotated[str | None, Query(max_length=1000)] = None,
) -> HTMLResponse:
    """Workloads of one target key (the first known one unless ``target`` names another)."""
    keys = q.targets(session)
    chosen = target or (keys[0] if keys else "")
    return _page(request, "workloads.html", "workloads", f"{PREFIX}/api/workloads", targets=keys, target=chosen)
