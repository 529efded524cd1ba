"""The worker's HTTP client for the tunehub service: wire models in, wire models out.

Failures split two ways:

    transient  connection errors, timeouts, 5xx, 429  -> retried with capped exponential
               backoff (logged), until success or the stop event
    final      4xx                                    -> raised as the tunehub error of the
               body's code: Unauthorized, Forbidden, NotFound, LeaseLost, BadInput, ...

A worker must survive a service restart, so transient failures never escape a
retrying call; only ``Stopped`` (the daemon is stopping) does.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from common import errors
from common.protocol import (
    HeartbeatRequest,
    HeartbeatResponse,
    LeaseRequest,
    LeaseResponse,
    ReleaseRequest,
    ResultsAck,
    ResultsReport,
    WorkerPublic,
    WorkerRegister,
)

log = logging.getLogger("workers.api")

M = TypeVar("M", bound=BaseModel)

_ERROR_BY_CODE: dict[str, type[errors.TunehubError]] = {
    cls.code: cls
    for cls in (
        errors.BadInput,
        errors.NotFound,
        errors.Unauthorized,
        errors.Forbidden,
        errors.Conflict,
        errors.LeaseLost,
    )
}
_ERROR_BY_STATUS: dict[int, type[errors.TunehubError]] = {
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    422: errors.BadInput,
}


class Stopped(Exception):
    """The stop event was set while waiting to retry."""


class TransientError(Exception):
    """The service could not be reached or failed on its side; worth retrying."""


def error_from_response(response: httpx.Response) -> errors.TunehubError:
    """The tunehub error a 4xx response stands for, keeping the service's message."""
    code, detail = "", response.text[:500]
    try:
        body = response.json()
        if isinstance(body, dict):
            code = str(body.get("error") or "")
            detail = str(body.get("detail") or detail)
    except ValueError:
        pass
    if response.status_code == 401:
        cls: type[errors.TunehubError] = errors.Unauthorized  # whatever the body says
    elif response.status_code == 403:
        cls = errors.Forbidden
    else:
        cls = _ERROR_BY_CODE.get(code) or _ERROR_BY_STATUS.get(response.status_code, errors.TunehubError)
    status = f"{response.status_code} {code}" if code else str(response.status_code)
    return cls(f"{response.request.method} {response.request.url.path} -> {status}: {detail}")


class ServiceClient:
    """Typed calls to ``/api/v1``; each takes and returns the protocol's pydantic models."""

    def __init__(
        self,
        server_url: str,
        token: str,
        *,
        stop: threading.Event,
        timeout_s: float = 30.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.server_url = server_url.rstrip("/")
        self._stop = stop
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._http = httpx.Client(
            base_url=self.server_url + "/api/v1",
            headers={"Authorization": f"Bearer {token}", "User-Agent": "tunehub-worker"},
            # Connect fails fast (service down); reads allow a busy service to answer.
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    # --- the endpoints ----------------------------------------------------------

    def register(self, body: WorkerRegister) -> WorkerPublic:
        return self.call("/workers", body, WorkerPublic)

    def lease(self, body: LeaseRequest) -> LeaseResponse:
        return self.call("/leases", body, LeaseResponse)

    def heartbeat(self, lease_id: int, body: HeartbeatRequest) -> HeartbeatResponse:
        return self.call(f"/leases/{lease_id}/heartbeat", body, HeartbeatResponse, retry=False)

    def report(self, lease_id: int, body: ResultsReport) -> ResultsAck:
        return self.call(f"/leases/{lease_id}/results", body, ResultsAck)

    def release(self, lease_id: int, body: ReleaseRequest) -> Any:
        return self.call(f"/leases/{lease_id}/release", body, None, retry=False)

    # --- the one request path -----------------------------------------------------

    def call(self, path: str, body: BaseModel, reply: type[M] | None, *, retry: bool = True) -> Any:
        """POST ``body`` and parse the reply as ``reply``.

        With ``retry`` transient failures are retried until success or stop
        (then ``Stopped``); without it they raise ``TransientError`` at once.
        4xx replies raise the matching ``common.errors`` class either way.
        """
        delay = self.backoff_initial_s
        while True:
            try:
                return self._post_once(path, body, reply)
            except TransientError as exc:
                if not retry:
                    raise
                if self._stop.is_set():
                    raise Stopped() from exc
                wait = delay * random.uniform(0.75, 1.0)  # jitter: a fleet must not retry in step
                log.warning("%s; retrying in %.1f s", exc, wait)
                if self._stop.wait(wait):
                    raise Stopped() from exc
                delay = min(self.backoff_max_s, delay * 2)

    def _post_once(self, path: str, body: BaseModel, reply: type[M] | None) -> Any:
        try:
            response = self._http.post(path, json=body.model_dump(mode="json"))
        except httpx.RequestError as exc:  # connect/read/write errors and timeouts
            raise TransientError(f"POST {path}: service unreachable ({type(exc).__name__}: {exc})") from exc
        status = response.status_code
        if status >= 500 or status in (408, 429):
            raise TransientError(f"POST {path}: service answered {status}: {response.text[:300]}")
        if status >= 400:
            raise error_from_response(response)
        if reply is None:
            return None
        try:
            return reply.model_validate(response.json())
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            # A reply we cannot read is the service's fault (mid-upgrade, proxy page).
            raise TransientError(f"POST {path}: unreadable reply ({exc})") from exc
