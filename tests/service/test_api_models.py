"""POST/GET /models: ONNX intake, dedup by sha256, and bad uploads that store nothing."""

from __future__ import annotations

import hashlib
import json

from live_server import MLP_ONNX, Live, make_models


def _upload(client, content: bytes, filename: str = "model.onnx", **form: str):  # type: ignore[no-untyped-def]
    return client.post("/models", files={"file": (filename, content, "application/octet-stream")}, data=form)


def test_upload_dedups_by_sha256(live: Live) -> None:
    user = live.client(live.token("user"))
    content = MLP_ONNX.read_bytes()
    r = _upload(user, content, "mlp.onnx")
    assert r.status_code in (200, 201), r.text  # another test of the module may have stored it
    first = r.json()
    assert first["name"] in ("mlp.onnx", "mlp") and first["sha256"] == hashlib.sha256(content).hexdigest()
    assert first["size_bytes"] == len(content) and first["input_shapes"] == {"x": [8, 64]}

    before = live.counts()
    r = _upload(user, content, "again.onnx", name="renamed", input_shapes='{"x": [8, 64]}')
    assert r.status_code == 200 and r.json()["created"] is False
    assert r.json()["id"] == first["id"] and r.json()["name"] == first["name"]
    assert live.counts() == before

    r = user.get(f"/models/{first['id']}")
    assert r.status_code == 200 and r.json()["sha256"] == first["sha256"]
    assert first["id"] in [m["id"] for m in user.get("/models").json()]
    r = user.get("/models/987654")
    assert r.status_code == 404 and r.json() == {"error": "not_found", "detail": "model 987654 does not exist"}


def test_symbolic_batch_needs_shapes_and_keeps_them(live: Live) -> None:
    content = make_models().mlp_model(batch="N").SerializeToString()
    before = live.counts()
    r = _upload(live.admin, content, "mlp-n.onnx")
    assert r.status_code == 422 and r.json()["error"] == "bad_input"
    assert "symbolic" in r.json()["detail"] and "input_shapes" in r.json()["detail"]
    assert live.counts() == before

    r = _upload(live.admin, content, "mlp-n.onnx", input_shapes=json.dumps({"x": [4, 64]}))
    assert r.status_code == 201, r.text
    assert r.json()["created"] is True and r.json()["input_shapes"] == {"x": [4, 64]}
    before = live.counts()
    r = _upload(live.admin, content, "mlp-n.onnx", input_shapes=json.dumps({"x": [2, 64]}))
    assert r.status_code == 409 and "[4, 64]" in r.json()["detail"]
    assert live.counts() == before


def test_bad_uploads_are_422_with_a_reason_and_store_nothing(live: Live) -> None:
    content = MLP_ONNX.read_bytes()
    admin = live.admin
    before = live.counts()
    cases = [
        (_upload(admin, b"this is not an onnx file at all"), "not a valid ONNX model"),
        (_upload(admin, content[: len(content) // 2], "half.onnx"), "not a valid ONNX model"),
        (_upload(admin, b"", "empty.onnx"), "empty"),
        (_upload(admin, content, input_shapes="{x: [1,"), "input_shapes is not valid JSON"),
        (_upload(admin, content, input_shapes="[1, 2]"), "input_shapes must be a JSON object"),
        (_upload(admin, content, input_shapes='{"y": [8, 64]}'), "not inputs of the model"),
        (_upload(admin, content, input_shapes='{"x": [8, 65]}'), "conflicts with the model"),
        (admin.post("/models", data={"name": "no file"}), "body.file"),
    ]
    for r, reason in cases:
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "bad_input" and reason in r.json()["detail"], r.json()
    assert live.counts() == before


def test_upload_over_the_size_limit_is_413_and_stores_nothing(live: Live) -> None:
    before = live.counts()
    limit = live.settings.max_model_mb
    live.settings.max_model_mb = 0.01  # the app reads its settings object per request
    try:
        r = _upload(live.admin, MLP_ONNX.read_bytes(), "big.onnx")
    finally:
        live.settings.max_model_mb = limit
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "too_large" and "TUNEHUB_MAX_MODEL_MB" in r.json()["detail"]
    assert live.counts() == before
