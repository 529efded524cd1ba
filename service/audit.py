"""The audit trail: one structured log line per write request, naming the token that made it.

Logged as the response starts (the status is known, the client has not seen it yet) on the ``tunehub.audit``
logger as JSON: ``{"event": "write", "method", "path", "status", "token_id",
"token"}``. The token is the one ``service.deps.current_token`` accepted; a
write refused before authentication logs ``token: null``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("tunehub.audit")

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class AuditLog:
    """Pure ASGI middleware; reads and non-HTTP scopes pass through unlogged."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in _READS:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        logged = False

        def record(status: int) -> None:
            nonlocal logged
            logged = True
            token = scope["state"].get("token")
            log.info(json.dumps({
                "event": "write",
                "method": scope["method"],
                "path": scope.get("path", ""),
                "status": status,
                "token_id": getattr(token, "id", None),
                "token": getattr(token, "name", None),
            }, sort_keys=True))

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record(message["status"])  # before the client can see the answer
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if not logged:  # it raised before answering: the server answers 500
                record(500)
