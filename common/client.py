"""The one HTTP client for the tunehub REST API: the CLI, the demo and the worker use it.

Every failed answer becomes a ``common.errors`` class in one place
(``error_from_response``), so the CLI and the worker see the same exception for
the same answer::

    connection error, timeout                 -> Unreachable (an Unavailable naming the URL tried)
    5xx, 408, 429                             -> Unavailable (transient)
    4xx                                       -> the class of the body's code (LeaseLost, ...)
                                                 or of the status (Unauthorized, NotFound, ...)

The worker's calls (register, lease, report) retry ``Unavailable`` with capped,
jittered exponential backoff until success or the ``stop`` event (then ``Stopped``):
a worker must survive a service restart.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from common import errors
from common.protocol import (
    HeartbeatRequest,
    HeartbeatResponse,
    JobCreate,
    JobPublic,
    LeaseRequest,
    LeaseResponse,
    ModelPublic,
    ReleaseRequest,
    ResultsAck,
    ResultsReport,
    RunCreate,
    RunCreated,
    RunResults,
    TokenCreate,
    TokenCreated,
    UserRecordCount,
    UserRecordCreate,
    UserRecordCreated,
    UserRecordWire,
    UserWorkloadCreate,
    UserWorkloadCreated,
    UserWorkloadWire,
    WorkerPublic,
    WorkerRegister,
)

log = logging.getLogger("common.client")

M = TypeVar("M", bound=BaseModel)

ApiError = errors.TunehubError
"""What a failed call raises (any ``common.errors`` class); the old name, kept for callers."""

_ERROR_BY_CODE: dict[str, type[errors.TunehubError]] = {
    cls.code: cls
    for cls in (
        errors.BadInput,
        errors.NotFound,
        errors.TooLarge,
        errors.Unauthorized,
        errors.Forbidden,
        errors.Conflict,
        errors.LeaseLost,
    )
}
_ERROR_BY_STATUS: dict[int, type[errors.TunehubError]] = {
    cls.status_code: cls
    for cls in (errors.BadInput, errors.NotFound, errors.TooLarge, errors.Unauthorized, errors.Forbidden, errors.Conflict)
}


class Stopped(Exception):
    """The stop event was set while waiting to retry."""


def error_from_response(response: httpx.Response) -> errors.TunehubError:
    """The tunehub error an answer of 400 or more stands for, keeping the service's message."""
    status = response.status_code
    code, detail = "", response.text[:500]
    try:
        body = response.json()
        if isinstance(body, dict):
            code = str(body.get("error") or "")
            detail = str(body.get("detail") or detail)
    except ValueError:
        pass
    cls: type[errors.TunehubError]
    if status >= 500 or status in (408, 429):
        cls = errors.Unavailable
    elif status in (401, 403):
        cls = _ERROR_BY_STATUS[status]  # whatever the body says
    else:
        cls = _ERROR_BY_CODE.get(code) or _ERROR_BY_STATUS.get(status, errors.TunehubError)
    shown = f"{status} {code}" if code else str(status)
    return cls(f"{response.request.method} {response.request.url.path} -> {shown}: {detail}")


class TunehubClient:
    """Typed calls to ``/api/v1``. ``stop`` (the worker's stop event) makes the worker's
    calls retry transient failures until it is set; without it they raise at once."""

    def __init__(
        self,
        server: str,
        token: str | None,
        *,
        timeout_s: float = 120.0,
        stop: threading.Event | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "tunehub",
        connect_timeout_s: float = 5.0,
    ):
        self.server_url = server.rstrip("/")
        self._stop = stop
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        headers = {"User-Agent": user_agent}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.server_url + "/api/v1",
            headers=headers,
            # Connect fails fast (service down); reads allow a busy service to answer.
            timeout=httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s)),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TunehubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the request paths ------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; an answer of 400 or more raises its ``common.errors`` class, no answer ``Unreachable``."""
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.RequestError as exc:  # connect/read/write errors and timeouts
            raise errors.Unreachable(
                f"{method} {path}: no answer from the tunehub service at {self.server_url} "
                f"({type(exc).__name__}: {exc})",
                server=self.server_url,
            ) from exc
        if resp.status_code >= 400:
            raise error_from_response(resp)
        return resp

    def _post_once(self, path: str, body: BaseModel, reply: type[M] | None) -> Any:
        response = self._call("POST", path, json=body.model_dump(mode="json"))
        if reply is None:
            return None
        try:
            return reply.model_validate(response.json())
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            # A reply we cannot read is the service's fault (mid-upgrade, proxy page).
            raise errors.Unavailable(f"POST {path}: unreadable reply ({exc})") from exc

    def call(self, path: str, body: BaseModel, reply: type[M] | None, *, retry: bool = True) -> Any:
        """POST ``body`` and parse the answer as ``reply``.

        With ``retry`` and a stop event, ``Unavailable`` is retried until success or stop
        (then ``Stopped``); otherwise it is raised at once. Other errors raise either way.
        """
        delay = self.backoff_initial_s
        while True:
            try:
                return self._post_once(path, body, reply)
            except errors.Unavailable as exc:
                if not retry or self._stop is None:
                    raise
                if self._stop.is_set():
                    raise Stopped() from exc
                wait = delay * random.uniform(0.75, 1.0)  # jitter: a fleet must not retry in step
                log.warning("%s; retrying in %.1f s", exc, wait)
                if self._stop.wait(wait):
                    raise Stopped() from exc
                delay = min(self.backoff_max_s, delay * 2)

    # --- the worker's endpoints -----------------------------------------------------

    def register(self, body: WorkerRegister) -> WorkerPublic:
        return self.call("/workers", body, WorkerPublic)

    def lease(self, body: LeaseRequest) -> LeaseResponse:
        return self.call("/leases", body, LeaseResponse)

    def heartbeat(self, lease_id: int, body: HeartbeatRequest) -> HeartbeatResponse:
        return self.call(f"/leases/{lease_id}/heartbeat", body, HeartbeatResponse, retry=False)

    def report(self, lease_id: int, body: ResultsReport) -> ResultsAck:
        return self.call(f"/leases/{lease_id}/results", body, ResultsAck)

    def release(self, lease_id: int, body: ReleaseRequest) -> None:
        self.call(f"/leases/{lease_id}/release", body, None, retry=False)

    # --- people's endpoints (CLI, demo) -----------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health").json()

    def create_token(self, name: str, role: str) -> TokenCreated:
        body = TokenCreate(name=name, role=role).model_dump(mode="json")  # type: ignore[arg-type]
        return TokenCreated.model_validate(self._call("POST", "/tokens", json=body).json())

    def upload_model(
        self, path: Path, *, name: str | None = None, input_shapes: dict[str, list[int]] | None = None
    ) -> ModelPublic:
        data: dict[str, str] = {"name": name or path.stem}
        if input_shapes:
            data["input_shapes"] = json.dumps(input_shapes)
        with path.open("rb") as fh:
            resp = self._call("POST", "/models", files={"file": (path.name, fh, "application/octet-stream")}, data=data)
        return ModelPublic.model_validate(resp.json())

    def create_job(self, model_id: int, target: dict[str, Any], trials: int | None = None,
                   trials_per_round: int | None = None, time_budget_s: float | None = None) -> JobPublic:
        body = JobCreate(model_id=model_id, target=target, trials=trials, trials_per_round=trials_per_round,
                         time_budget_s=time_budget_s)
        return JobPublic.model_validate(self._call("POST", "/jobs", json=body.model_dump(mode="json")).json())

    def job(self, job_id: int) -> JobPublic:
        return JobPublic.model_validate(self._call("GET", f"/jobs/{job_id}").json())

    def cancel_job(self, job_id: int) -> JobPublic:
        return JobPublic.model_validate(self._call("POST", f"/jobs/{job_id}/cancel").json())

    def workers(self) -> list[WorkerPublic]:
        return [WorkerPublic.model_validate(w) for w in self._call("GET", "/workers").json()]

    def download_configs(
        self,
        *,
        job: int | None = None,
        model: int | None = None,
        target: dict[str, Any] | None = None,
        best_known: bool = False,
        include_other_tvm: bool = False,
    ) -> bytes:
        """A config bundle (zip): of a job, of a model on a target, or the best known for a target."""
        params: dict[str, Any] = {}
        if job is not None:
            params["job"] = job
        if model is not None:
            params["model"] = model
        if target is not None:
            params["target"] = json.dumps(target)
        if include_other_tvm:
            params["include_other_tvm"] = "true"
        return self._call("GET", "/configs/best-known" if best_known else "/configs", params=params).content

    # --- ad-hoc runs (tunehub.metaschedule.FleetRunner) ---------------------------------

    def create_run(self, target: dict[str, Any] | str, modules: list[str]) -> RunCreated:
        body = RunCreate(target=target, modules=modules).model_dump(mode="json")
        return RunCreated.model_validate(self._call("POST", "/runs", json=body).json())

    def run_results(self, run_id: int, candidate_ids: list[int]) -> RunResults:
        return RunResults.model_validate(self._call("GET", f"/runs/{run_id}/results", params={"ids": candidate_ids}).json())

    def close_run(self, run_id: int) -> int:
        return int(self._call("POST", f"/runs/{run_id}/close").json()["withdrawn"])

    # --- user records (tunehub.metaschedule.Database over HTTP) ---------------------------

    def add_user_workload(self, mod_json: str) -> int:
        body = UserWorkloadCreate(mod_json=mod_json).model_dump(mode="json")
        return UserWorkloadCreated.model_validate(self._call("POST", "/records/workloads", json=body).json()).workload_id

    def user_workloads(self, after_id: int) -> list[UserWorkloadWire]:
        rows = self._call("GET", "/records/workloads", params={"after": after_id}).json()
        return [UserWorkloadWire.model_validate(r) for r in rows]

    def add_user_record(self, workload_id: int, target_key: str, record_json: str) -> int:
        body = UserRecordCreate(workload_id=workload_id, target_key=target_key, record_json=record_json)
        return UserRecordCreated.model_validate(self._call("POST", "/records", json=body.model_dump(mode="json")).json()).id

    def top_user_records(self, target_key: str, workload_ids: list[int], k: int) -> list[UserRecordWire]:
        params = {"target_key": target_key, "workload_ids": workload_ids, "k": k}
        return [UserRecordWire.model_validate(r) for r in self._call("GET", "/records/top", params=params).json()]

    def user_records(self, target_key: str | None = None) -> list[UserRecordWire]:
        params = {} if target_key is None else {"target_key": target_key}
        return [UserRecordWire.model_validate(r) for r in self._call("GET", "/records", params=params).json()]

    def count_user_records(self, target_key: str) -> int:
        reply = self._call("GET", "/records/count", params={"target_key": target_key}).json()
        return UserRecordCount.model_validate(reply).count
