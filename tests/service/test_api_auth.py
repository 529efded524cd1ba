"""Tokens and the error contract: 401/403 JSON, hashed at rest, bootstrap, JSON for every error."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import httpx
from live_server import Live, serve
from sqlalchemy import select

from db import tokens
from db.engine import make_engine, make_sessionmaker, session_scope
from db.models import Token
from service.app import admin_token_path, create_app
from common.settings import Settings

PROTECTED = [
    ("POST", "/tokens"),
    ("DELETE", "/tokens/1"),
    ("GET", "/models"),
    ("POST", "/models"),
    ("GET", "/models/1"),
    ("GET", "/jobs"),
    ("POST", "/jobs"),
    ("GET", "/jobs/1"),
    ("POST", "/jobs/1/cancel"),
    ("GET", "/workers"),
    ("POST", "/workers"),
    ("POST", "/leases"),
    ("POST", "/leases/1/heartbeat"),
    ("POST", "/leases/1/results"),
    ("POST", "/leases/1/release"),
    ("GET", "/configs?job=1"),
]


def test_health_is_open_and_checks_the_database(live: Live) -> None:
    r = live.client().get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["version"]


def test_every_other_endpoint_needs_a_known_token(live: Live) -> None:
    anonymous, stranger = live.client(), live.client("not-a-token")
    basic = live.client()
    basic.headers["Authorization"] = "Basic dXNlcjpwdw=="
    before = live.counts()
    for method, path in PROTECTED:
        for client in (anonymous, stranger, basic):
            r = client.request(method, path, json={})
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"] == "unauthorized" and r.json()["detail"]
            assert r.headers["www-authenticate"] == "Bearer"
    assert live.counts() == before


def test_roles_are_enforced_with_403(live: Live) -> None:
    user, worker = live.client(live.token("user")), live.client(live.token("worker"))
    before = live.counts()
    denied = [
        (user, "POST", "/tokens", {"name": "x", "role": "admin"}),
        (worker, "POST", "/tokens", {"name": "x", "role": "admin"}),
        (user, "DELETE", "/tokens/1", None),
        (worker, "POST", "/jobs", {"model_id": 1, "target": {"kind": "llvm"}}),
        (worker, "POST", "/jobs/1/cancel", None),
        (user, "POST", "/workers", {"name": "w", "target": {"kind": "llvm"}}),
        (user, "POST", "/leases", {"worker_id": 1}),
        (user, "POST", "/leases/1/results", {"worker_id": 1, "results": []}),
    ]
    for client, method, path, body in denied:
        r = client.request(method, path, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"] == "forbidden" and "role" in r.json()["detail"]
    r = worker.post("/models", files={"file": ("m.onnx", b"x")})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert live.counts() == before
    # reads are open to any valid token
    assert worker.get("/jobs").status_code == 200 and user.get("/workers").status_code == 200


def test_tokens_are_hashed_at_rest_shown_once_and_revocable(live: Live) -> None:
    r = live.admin.post("/tokens", json={"name": "ci-runner", "role": "worker"})
    assert r.status_code == 201
    created = r.json()
    raw = created["token"]
    assert created["role"] == "worker" and created["name"] == "ci-runner" and len(raw) >= 40
    with live.session() as s:
        rows = s.execute(select(Token)).scalars().all()
        dumped = [repr([getattr(t, c.key) for c in Token.__table__.columns]) for t in rows]
        row = s.get(Token, created["id"])
        assert row is not None and row.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert not any(raw in d for d in dumped)
    assert not any(live.admin_token in d for d in dumped)

    client = live.client(raw)
    assert client.get("/workers").status_code == 200
    assert live.admin.delete(f"/tokens/{created['id']}").status_code == 204
    r = client.get("/workers")
    assert r.status_code == 401 and r.json()["detail"] == "unknown or revoked token"
    assert live.admin.delete("/tokens/999999").status_code == 404


def test_errors_are_json_for_unknown_routes_methods_and_bad_bodies(live: Live) -> None:
    admin = live.admin
    r = admin.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = live.client().get("/api/v2/health".removeprefix("/api/v1"))
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
    r = admin.put("/models")
    assert r.status_code == 405
    assert r.json() == {"error": "method_not_allowed", "detail": "PUT is not allowed on /api/v1/models"}
    r = admin.post("/tokens", json={"name": "", "role": "emperor"})
    assert r.status_code == 422 and r.json()["error"] == "bad_input"
    assert "body.name" in r.json()["detail"] and "body.role" in r.json()["detail"]
    r = admin.post("/tokens", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "invalid JSON" in r.json()["detail"]
    r = admin.get("/jobs/notanumber")
    assert r.status_code == 422 and r.json()["detail"].startswith("path.job_id:")


def test_admin_token_bootstrap(db_url: str, tmp_path: Path) -> None:
    def start(settings: Settings) -> None:
        create_app(settings).state.engine.dispose()

    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, admin_token=None)
    start(settings)
    path = admin_token_path(settings)
    raw = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(raw) >= 40
    start(settings)  # a restart reuses the file and stores nothing new
    assert path.read_text().strip() == raw
    fixed = Settings(data_dir=tmp_path / "other", database_url=db_url, admin_token="operator-chosen-" + "x" * 40)
    start(fixed)
    assert not admin_token_path(fixed).exists()

    engine = make_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as s:
        assert tokens.verify_token(s, raw=raw) is not None
        assert tokens.verify_token(s, raw=fixed.admin_token or "") is not None
        assert len(s.scalars(select(Token)).all()) == 2
    engine.dispose()


def test_an_unexpected_error_is_a_500_json_without_internals(tmp_path: Path) -> None:
    """A route that fails in a way nobody planned for (added here: no real route is meant to)."""
    app = create_app(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 't.db'}", admin_token=None))

    def boom() -> None:
        raise RuntimeError("secret internals: /etc/passwd")

    app.add_api_route("/api/v1/boom", boom)
    with serve(app) as base:
        r = httpx.get(base + "/api/v1/boom")
        assert r.status_code == 500
        assert r.json() == {"error": "internal", "detail": "internal error (RuntimeError); the service log has the details"}
        spec = httpx.get(base + "/openapi.json").json()  # the schema builds, every route in it
        assert {"/api/v1/jobs", "/api/v1/leases/{lease_id}/results", "/api/v1/configs"} <= set(spec["paths"])
    app.state.engine.dispose()
