"""The route layer in process (FastAPI's TestClient on ``create_app``), over SQLite: fast checks of
status codes, error bodies and wire formats beside the live-server tests, which cover real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from common.settings import Settings
from db.engine import make_engine, make_sessionmaker, session_scope
from factories import add_job, add_model
from service.app import create_app

ADMIN = "inprocess-admin-token"


@pytest.fixture
def app_db(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    url = f"sqlite:///{tmp_path / 'tunehub.db'}"
    settings = Settings(data_dir=tmp_path, database_url=url, admin_token=ADMIN)
    with TestClient(create_app(settings)) as client:
        yield client, url


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_mint_check_roles_and_revoke(app_db: tuple[TestClient, str]) -> None:
    client, _ = app_db
    assert client.post("/api/v1/tokens", json={"name": "u", "role": "user"}).status_code == 401
    made = client.post("/api/v1/tokens", json={"name": "u", "role": "user"}, headers=_auth(ADMIN))
    assert made.status_code == 201 and made.json()["role"] == "user" and made.json()["name"] == "u"
    user = made.json()["token"]
    assert client.get("/api/v1/models", headers=_auth(user)).json() == []
    denied = client.post("/api/v1/tokens", json={"name": "x", "role": "admin"}, headers=_auth(user))
    assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
    bad_role = client.post("/api/v1/tokens", json={"name": "x", "role": "root"}, headers=_auth(ADMIN))
    assert bad_role.status_code == 422 and bad_role.json()["error"] == "bad_input"
    assert client.delete(f"/api/v1/tokens/{made.json()['id']}", headers=_auth(ADMIN)).status_code == 204
    gone = client.get("/api/v1/models", headers=_auth(user))
    assert gone.status_code == 401 and gone.json() == {"error": "unauthorized", "detail": "unknown or revoked token"}
    assert client.delete("/api/v1/tokens/987654", headers=_auth(ADMIN)).json()["error"] == "not_found"


def test_models_and_jobs_answer_with_aware_utc_times_and_json_errors(app_db: tuple[TestClient, str]) -> None:
    client, url = app_db
    engine = make_engine(url)
    with session_scope(make_sessionmaker(engine)) as s:
        model = add_model(s, name="stored.onnx", shapes={"x": [1, 4]})
        job = add_job(s, model=model, key='{"kind":"llvm"}', target={"kind": "llvm"})
        model_id, job_id = model.id, job.id
    engine.dispose()

    got = client.get(f"/api/v1/models/{model_id}", headers=_auth(ADMIN)).json()
    assert got["name"] == "stored.onnx" and got["input_shapes"] == {"x": [1, 4]}
    assert datetime.fromisoformat(got["created_at"]).utcoffset().total_seconds() == 0  # aware UTC
    missing = client.get("/api/v1/models/987654", headers=_auth(ADMIN))
    assert missing.status_code == 404 and missing.json() == {"error": "not_found", "detail": "model 987654 does not exist"}

    pub = client.get(f"/api/v1/jobs/{job_id}", headers=_auth(ADMIN)).json()
    assert pub["status"] == "queued" and datetime.fromisoformat(pub["created_at"]).tzinfo is not None
    assert client.get("/api/v1/jobs/987654", headers=_auth(ADMIN)).json()["error"] == "not_found"
    assert client.get("/api/v1/jobs?status=bogus", headers=_auth(ADMIN)).status_code == 422
    cancelled = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=_auth(ADMIN))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert datetime.fromisoformat(cancelled.json()["finished_at"]).tzinfo is not None
    again = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=_auth(ADMIN))
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    unknown = client.get("/api/v1/configs?job=987654", headers=_auth(ADMIN))
    assert unknown.status_code == 404
    assert client.get("/api/v1/configs", headers=_auth(ADMIN)).json()["error"] == "bad_input"
