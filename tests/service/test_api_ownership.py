"""Jobs and models record the token that made them; only the owner or an admin cancels; writes are audited.

Over HTTP on a live server, with real jobs (the MLP example split by TVM).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from live_server import MLP_ONNX, Live
from sqlalchemy import select

from db.models import Job, Model

TARGET = {"kind": "llvm", "num-cores": 2}


@pytest.fixture(scope="module")
def owned(live: Live) -> dict[str, Any]:
    """A model and two queued jobs of one user (alice)."""
    alice = live.client(live.token("user", "alice"))
    r = alice.post("/models", files={"file": ("mlp.onnx", MLP_ONNX.read_bytes())})
    assert r.status_code in (200, 201), r.text
    model = r.json()
    made = [alice.post("/jobs", json={"model_id": model["id"], "target": TARGET, "trials": 4}) for _ in range(2)]
    assert all(r.status_code == 201 for r in made), [r.text for r in made]
    return {"alice": alice, "model": model, "jobs": [r.json()["id"] for r in made]}


def test_rows_record_their_owner(live: Live, owned: dict[str, Any]) -> None:
    with live.session() as s:
        owners = set(s.scalars(select(Job.owner_token_id).where(Job.id.in_(owned["jobs"]))))
        model_owner = s.scalar(select(Model.owner_token_id).where(Model.id == owned["model"]["id"]))
    assert len(owners) == 1 and None not in owners
    if owned["model"]["created"]:
        assert model_owner == owners.pop()


def test_only_owner_or_admin_cancels(live: Live, owned: dict[str, Any]) -> None:
    first, second = owned["jobs"]
    mallory = live.client(live.token("user", "mallory"))
    before = live.counts()
    r = mallory.post(f"/jobs/{first}/cancel")
    assert r.status_code == 403 and r.json()["error"] == "forbidden" and "owner" in r.json()["detail"]
    assert mallory.get(f"/jobs/{first}").json()["status"] == "queued"
    assert live.counts() == before
    r = owned["alice"].post(f"/jobs/{first}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = live.admin.post(f"/jobs/{second}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"


def test_every_write_is_logged_with_the_token_name(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    bob = live.client(live.token("user", "bob-auditor"))
    with caplog.at_level(logging.INFO, logger="tunehub.audit"):
        r = bob.post("/jobs/999999/cancel")
        assert r.status_code == 404
        bob.get("/jobs")  # a read: not logged
        live.client("not-a-token").post("/jobs/1/cancel")
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "tunehub.audit"]
    mine = [x for x in lines if x["path"].endswith("/jobs/999999/cancel")]
    assert mine and mine[0] == {"event": "write", "method": "POST", "path": "/api/v1/jobs/999999/cancel",
                                "status": 404, "token": "bob-auditor", "token_id": mine[0]["token_id"]}
    assert not [x for x in lines if x["method"] == "GET"]
    anonymous = [x for x in lines if x["path"] == "/api/v1/jobs/1/cancel"]
    assert anonymous and anonymous[0]["status"] == 401 and anonymous[0]["token"] is None
