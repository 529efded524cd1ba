"""GET /health: the one open endpoint, for load balancers and ``tunehub`` itself."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

import common
from service.deps import SessionDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(session: SessionDep) -> dict[str, Any]:
    """``{"status": "ok", "version": ...}`` after a database round trip (503 when the database is down)."""
    session.execute(text("SELECT 1"))
    return {"status": "ok", "version": common.__version__}
