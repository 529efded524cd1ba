"""One mapping from errors to JSON bodies: ``{"error": code, "detail": message}``.

- ``common.errors.*`` carry their own status and code;
- request validation (FastAPI/pydantic) is 422 ``bad_input`` with a readable detail;
- unknown routes and methods keep their status (404/405) but answer in JSON;
- a lost database connection is 503 ``unavailable`` (workers retry on it);
- input nested too deeply or a number out of range is 422 ``bad_input`` (a
  backstop behind the schema bounds and ``service.body_limits``);
- anything else is 500 ``internal``: logged here with the request, and its
  traceback logged by the server, never sent to the client.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import TunehubError, Unauthorized

log = logging.getLogger("tunehub.service")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": code, "detail": detail}, headers=headers)


def _where(loc: tuple[Any, ...]) -> str:
    if not loc:
        return "request"
    kind, *rest = (str(p) for p in loc)
    return f"{kind}.{'.'.join(rest)}" if rest else kind


def readable_validation(errors: list[dict[str, Any]]) -> str:
    """'body.trials: Input should be greater than or equal to 1; query.job: ...' (no echo of the input)."""
    parts = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "json_invalid":
            where = loc[1] if len(loc) > 1 else "?"
            reason = (err.get("ctx") or {}).get("error", "")
            parts.append(f"body: invalid JSON at position {where}" + (f": {reason}" if reason else ""))
            continue
        parts.append(f"{_where(loc)}: {msg}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TunehubError)
    def _tunehub(request: Request, exc: TunehubError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.detail)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        return error_response(exc.status_code, exc.code, exc.detail, headers)

    @app.exception_handler(RequestValidationError)
    def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "bad_input", readable_validation(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.url.path}; the API lives under /api/v1 (see /docs)"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, code, detail, dict(exc.headers or {}) or None)

    @app.exception_handler(RecursionError)
    def _too_deep(request: Request, _exc: RecursionError) -> JSONResponse:
        # A backstop: JSON bodies are depth-checked before parsing (service.body_limits); other text is not.
        log.warning("%s %s: input nested too deeply", request.method, request.url.path)
        return error_response(422, "bad_input", "the input is nested too deeply")

    @app.exception_handler(OverflowError)
    def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
        # A backstop: every id and count is bounded in the schema; a number that still overflows is the client's.
        log.warning("%s %s: number out of range: %s", request.method, request.url.path, exc)
        return error_response(422, "bad_input", "a number in the request is out of range")

    @app.exception_handler(OperationalError)
    def _db_down(request: Request, exc: OperationalError) -> JSONResponse:
        log.error("%s %s: database unavailable: %s", request.method, request.url.path, exc.orig)
        return error_response(503, "unavailable", "the database is unavailable; retry shortly")

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this response, so the server logs the traceback.
        log.error("%s %s raised %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        detail = f"internal error ({type(exc).__name__}); the service log has the details"
        return error_response(500, "internal", detail)
