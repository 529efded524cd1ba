"""A small typed client for the tunehub REST API (used by the CLI and the demo).

Errors come back as ``ApiError`` carrying the service's JSON ``error`` code and
``detail`` message, so callers can print something a person can act on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from common.protocol import JobCreate, JobPublic, ModelPublic, TokenCreate, TokenCreated, WorkerPublic


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class TunehubClient:
    def __init__(self, server: str, token: str | None, *, timeout_s: float = 120.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=server.rstrip("/") + "/api/v1",
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=5.0),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TunehubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        resp = self._http.request(method, path, **kwargs)
        if resp.status_code >= 400:
            try:
                body = resp.json()
                raise ApiError(resp.status_code, body.get("error", "error"), body.get("detail", resp.text))
            except (ValueError, AttributeError):
                raise ApiError(resp.status_code, "error", resp.text) from None
        return resp

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
        self, *, job: int | None = None, model: int | None = None, target: dict[str, Any] | None = None
    ) -> bytes:
        params: dict[str, Any] = {}
        if job is not None:
            params["job"] = job
        if model is not None:
            params["model"] = model
        if target is not None:
            params["target"] = json.dumps(target)
        return self._call("GET", "/configs", params=params).content
