"""Nothing a client sends yields a 5xx: out-of-range numbers, deep or huge JSON, over HTTP on a live server.

Every refusal is a 4xx with the ``{"error", "detail"}`` body, the connection
stays usable (keep-alive), and nothing stored changes.
"""

from __future__ import annotations

import pytest
from live_server import Live

HUGE = 2**63  # one past the largest id either database stores
DEEP = 5000


def _nested(depth: int) -> str:
    """A target JSON text nested ``depth + 1`` brackets deep (built as text: json.dumps would recurse)."""
    return '{"kind": "llvm", "x": ' + "[" * depth + "1" + "]" * depth + "}"


def _post(client, path: str, text: str):  # type: ignore[no-untyped-def]
    return client.post(path, content=text.encode(), headers={"content-type": "application/json"})


def _refused(r, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    return body


@pytest.fixture(scope="module")
def clients(live: Live):  # type: ignore[no-untyped-def]
    return live.client(live.token("user")), live.client(live.token("worker")), live.admin


def test_out_of_range_ids_and_offsets_are_422(live: Live, clients) -> None:  # type: ignore[no-untyped-def]
    user, worker, admin = clients
    before = live.counts()
    for value in (HUGE, 10**30, 0, -1):
        _refused(user.get(f"/jobs/{value}"), 422)
        _refused(user.get(f"/models/{value}"), 422)
        _refused(user.post(f"/jobs/{value}/cancel"), 422)
        _refused(admin.delete(f"/tokens/{value}"), 422)
        _refused(user.get("/configs", params={"job": value}), 422)
        _refused(user.get("/jobs", params={"model_id": value}), 422)
        _refused(worker.post(f"/leases/{value}/heartbeat", json={"worker_id": 1}), 422)
        _refused(worker.post(f"/leases/{value}/release", json={"worker_id": 1}), 422)
        _refused(worker.post("/leases", json={"worker_id": value}), 422)
        _refused(worker.post("/leases/1/results", json={"worker_id": 1, "results": [
            {"candidate_id": value, "run_secs": [1e-3]}]}), 422)
        _refused(user.post("/jobs", json={"model_id": value, "target": {"kind": "llvm"}}), 422)
    for value in (HUGE, -1):
        _refused(user.get("/models", params={"offset": value}), 422)
        _refused(user.get("/jobs", params={"offset": value}), 422)
    _refused(user.get("/jobs", params={"limit": 10**6}), 422)
    # The same connection still answers: no reset after a refusal.
    assert user.get("/health").status_code == 200
    assert live.counts() == before


def test_deep_and_huge_json_is_refused(live: Live, clients) -> None:  # type: ignore[no-untyped-def]
    user, worker, _ = clients
    before = live.counts()
    body = _refused(_post(user, "/jobs", '{"model_id": 1, "target": ' + _nested(DEEP) + "}"), 422)
    assert "nested deeper" in body["detail"]
    _refused(_post(worker, "/workers", '{"name": "deep", "target": ' + _nested(DEEP) + "}"), 422)
    _refused(_post(worker, "/workers", '{"name": "deep", "target": ' + _nested(40) + "}"), 422)
    # Depth inside strings does not count: a 200-bracket name is just text (and too long a name).
    _refused(worker.post("/workers", json={"name": "[" * 300, "target": {"kind": "llvm"}}), 422)
    _refused(user.get("/configs", params={"model": 1, "target": _nested(DEEP)[:4000]}), 422)
    _refused(user.get("/configs", params={"model": 1, "target": _nested(40)}), 422)
    limit = live.settings.max_json_kb * 1024
    big = b'{"name": "' + b"x" * limit + b'", "target": {"kind": "llvm"}}'
    _refused(worker.post("/workers", content=big, headers={"content-type": "application/json"}), 413)
    _refused(worker.post("/workers", content=b"[" * 3000, headers={"content-type": "application/json"}), 422)
    _refused(worker.post("/workers", content=b"{not json", headers={"content-type": "application/json"}), 422)
    assert worker.get("/health").status_code == 200
    assert live.counts() == before


def test_errors_are_json_everywhere(live: Live, clients) -> None:  # type: ignore[no-untyped-def]
    user, _, _ = clients
    _refused(user.get("/no-such-route"), 404)
    _refused(user.put("/jobs"), 405)
    _refused(live.client().get("/jobs"), 401)
    _refused(user.post("/tokens", json={"name": "x", "role": "admin"}), 403)
