"""Request bodies bounded before anything parses them: size and JSON nesting depth.

A JSON body over ``max_bytes`` is a 413, one nested deeper than ``max_depth``
brackets is a 422: both answered here, as the ``{"error", "detail"}`` body of
``service.errors``, before FastAPI's ``json.loads`` (which raises
``RecursionError`` near 1,000 levels) or pydantic sees it. Multipart and form
bodies (model uploads) pass through: their route bounds them.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A JSON string literal; removed before counting brackets so "[[[" inside text does not count.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PASS_THROUGH = (b"multipart/", b"application/x-www-form-urlencoded")


def json_depth(data: bytes) -> int:
    """The deepest bracket nesting of a JSON text (0 for a scalar); malformed text is left to the parser."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRING.sub(b'""', data)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class JsonBodyLimit:
    """Pure ASGI middleware: buffers a JSON request body, refuses it when too big or too deep."""

    def __init__(self, app: Any, *, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in _WRITES:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if headers.get(b"content-type", b"").lower().startswith(_PASS_THROUGH):
            await self.app(scope, receive, send)
            return
        too_big = f"the JSON body is over the {self.max_bytes} byte limit"
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(send, 413, "too_large", too_big)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _refuse(send, 413, "too_large", too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_depth(body) > self.max_depth:
            detail = f"body: JSON nested deeper than {self.max_depth} levels"
            await _refuse(send, 422, "bad_input", detail)
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(send: Any, status: int, code: str, detail: str) -> None:
    payload = json.dumps({"error": code, "detail": detail}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
    })
    await send({"type": "http.response.body", "body": payload})
