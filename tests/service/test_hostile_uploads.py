"""Hostile uploads against a real service process: no file read, no memory blown, nothing stored.

The service runs as its own process (``tunehub serve``) on a loopback port, so
its peak memory (``VmHWM``) is that of the API alone. Its working directory
holds ``secret.bin`` and its database at ``data/tunehub.db``: the paths a
hostile model names. Intake may use 400 MiB, so a model whose folding needs
a GiB meets the limit; every other bound is the default.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy import func, select

from common.processes import free_port, stop, wait_healthy
from db.engine import make_engine, make_sessionmaker, session_scope
from db.models import Base
from live_server import API, MLP_ONNX, ROOT, make_models

PEAK_MB = 600  # the API process with TVM imported stays well under this
INTAKE_MB = 400


@dataclass
class Server:
    base_url: str
    pid: int
    cwd: Path
    admin: httpx.Client
    factory: Any

    def counts(self) -> dict[str, int]:
        with session_scope(self.factory) as s:
            return {n: s.execute(select(func.count()).select_from(t)).scalar_one() for n, t in Base.metadata.tables.items()}

    def peak_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    cwd = tmp_path_factory.mktemp("hostile")
    (cwd / "data").mkdir()
    (cwd / "secret.bin").write_bytes(b"s" * 12345)
    db_url = f"sqlite:///{cwd / 'data' / 'tunehub.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEHUB_")}
    env |= {
        "TUNEHUB_DATA_DIR": str(cwd / "data"),
        "TUNEHUB_DATABASE_URL": db_url,
        "TUNEHUB_INTAKE_MEMORY_MB": str(INTAKE_MB),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    port = free_port()
    with (cwd / "serve.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tunehub", "serve", "--no-tuner", "--port", str(port)],
            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    engine = None
    try:
        wait_healthy(base, timeout_s=300, proc=proc)
        token = (cwd / "data" / "admin_token").read_text().strip()
        engine = make_engine(db_url)
        with httpx.Client(base_url=base + API, headers={"Authorization": f"Bearer {token}"}, timeout=600) as admin:
            yield Server(base, proc.pid, cwd, admin, make_sessionmaker(engine))
    finally:
        stop(proc)
        if engine is not None:
            engine.dispose()


def _onnx(nodes: list[Any], inputs: list[Any], outputs: list[Any], **graph: Any) -> bytes:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, **graph), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _vec(name: str, n: int = 4, dtype: int = TensorProto.FLOAT) -> Any:
    return helper.make_tensor_value_info(name, dtype, [n])


def _external(name: str, location: str) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    return t


def _const_add(location: str) -> bytes:
    """y = x + Constant(w), w's bytes 'in' ``location``: no initializer at all."""
    const = helper.make_node("Constant", [], ["w"], value=_external("w", location))
    return _onnx([const, helper.make_node("Add", ["x", "w"], ["y"])], [_vec("x")], [_vec("y")])


def _external_models() -> dict[str, bytes]:
    init = _onnx([helper.make_node("Add", ["x", "w"], ["y"])], [_vec("x")], [_vec("y")], initializer=[_external("w", "secret.bin")])
    branch = helper.make_graph([helper.make_node("Constant", [], ["b"], value=_external("b", "secret.bin"))], "branch", [], [_vec("b")])
    if_node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    in_if = _onnx([if_node], [helper.make_tensor_value_info("c", TensorProto.BOOL, [])], [_vec("y")])
    values = _external("w", "data/tunehub.db")
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.array([0, 1, 2, 3], np.int64), "i"), [4])
    in_sparse = _onnx([helper.make_node("Add", ["x", "w"], ["y"])], [_vec("x")], [_vec("y")], sparse_initializer=[sparse])
    fill = helper.make_node("ConstantOfShape", ["s"], ["y"], value=_external("v", "secret.bin"))
    in_attr = _onnx([fill], [helper.make_tensor_value_info("s", TensorProto.INT64, [1])], [_vec("y")])
    return {
        "constant secret.bin": _const_add("secret.bin"),
        "constant data/tunehub.db": _const_add("data/tunehub.db"),
        "initializer": init,
        "If subgraph": in_if,
        "sparse initializer": in_sparse,
        "ConstantOfShape value": in_attr,
    }


def _fill_add(n: int, m: int) -> bytes:
    """y = x + ConstantOfShape([n, m]): about 150 bytes that fold into n*m floats."""
    shape = helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.array([n, m], np.int64)))
    fill = helper.make_node("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
    add = helper.make_node("Add", ["x", "c"], ["y"])
    return _onnx([shape, fill, add], [_vec("x", 1)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, m])])


def _matmul(dims: list[Any]) -> bytes:
    a, b = (helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in "ab")
    return _onnx([helper.make_node("MatMul", ["a", "b"], ["y"])], [a, b], [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])


def _upload(s: Server, content: bytes, **form: str) -> httpx.Response:
    return s.admin.post("/models", files={"file": ("m.onnx", content, "application/octet-stream")}, data=form)


def _refused(r: httpx.Response, status: int, *needles: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    for needle in needles:
        assert needle in body["detail"], body
    return str(body["detail"])


def test_external_data_anywhere_is_refused_at_upload(server: Server) -> None:
    before = server.counts()
    for what, content in _external_models().items():
        detail = _refused(_upload(server, content), 422, "external file")
        assert "12345" not in detail, what  # secret.bin's size: the file was never looked at
    assert server.counts() == before
    assert server.peak_mb() < PEAK_MB


def test_sizes_are_bounded_before_storing(server: Server) -> None:
    before = server.counts()
    _refused(_upload(server, _fill_add(20000, 20000)), 422, "[20000, 20000]", "TUNEHUB_INTAKE_MAX_TENSOR_ELEMENTS")
    _refused(_upload(server, _matmul([10**9, 10**9])), 422, "TUNEHUB_INTAKE_MAX_TENSOR_ELEMENTS")
    _refused(_upload(server, _matmul(["n", "n"]), input_shapes='{"a": [1000000000, 1000000000], "b": [1000000000, 1000000000]}'), 422, "input_shapes")
    conv = _onnx(  # every tensor within the size bound, 1.9e13 FLOPs in one call
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096, 256, 256]), helper.make_tensor_value_info("w", TensorProto.FLOAT, [4096, 4096, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096, 254, 254])],
    )
    _refused(_upload(server, conv), 422, "Conv node", "TUNEHUB_INTAKE_MAX_TASK_FLOPS")
    mlp_n = make_models().mlp_model(batch="N").SerializeToString()
    _refused(_upload(server, mlp_n, input_shapes='{"x": [100000000000000000000, 16]}'), 422, "input_shapes")
    _refused(_upload(server, mlp_n, input_shapes=f'{{"x": [{2**31 - 1}, 64]}}'), 422, "TUNEHUB_INTAKE_MAX_TENSOR_ELEMENTS")
    assert server.counts() == before
    # nothing was stored under these bytes, so the corrected shapes are welcome
    r = _upload(server, mlp_n, input_shapes='{"x": [4, 64]}')
    assert r.status_code == 201 and r.json()["input_shapes"] == {"x": [4, 64]}, r.text
    assert server.peak_mb() < PEAK_MB


@pytest.fixture(scope="module")
def mlp_id(server: Server) -> int:
    r = _upload(server, MLP_ONNX.read_bytes())
    assert r.status_code in (200, 201), r.text
    return int(r.json()["id"])


@pytest.mark.parametrize(
    ("target", "needles"),
    [
        ({"kind": "cuda", "arch": "sm_99999"}, ("sm_99999", "sm_80")),
        ({"kind": "cuda"}, ("needs an 'arch'",)),
        ({"kind": "llvm", "num-cores": -5}, ("num-cores", "1..1024")),
        ({"kind": "llvm", "mtriple": "evil-none-none"}, ("evil-none-none", "aarch64-linux-gnu")),
        ({"kind": "opencl"}, ("llvm, cuda",)),
    ],
)
def test_targets_no_worker_serves_are_refused(server: Server, mlp_id: int, target: dict[str, Any], needles: tuple[str, ...]) -> None:
    before = server.counts()
    _refused(server.admin.post("/jobs", json={"model_id": mlp_id, "target": target, "trials": 8}), 422, *needles)
    assert server.counts() == before


def test_cuda_target_is_completed_from_its_arch(server: Server, mlp_id: int) -> None:
    r = server.admin.post("/jobs", json={"model_id": mlp_id, "target": {"kind": "cuda", "arch": "sm_80"}, "trials": 8})
    assert r.status_code == 201, r.text
    target = r.json()["target"]
    assert target["max_threads_per_block"] == 1024 and target["max_shared_memory_per_block"] == 49152
    assert target["thread_warp_size"] == 32 and target["registers_per_block"] == 65536
    assert server.peak_mb() < PEAK_MB


def test_folding_past_the_memory_limit_is_413_in_the_child(server: Server) -> None:
    r = _upload(server, _fill_add(16384, 16384))  # 2**28 floats: within the size bound, 1 GiB to fold
    assert r.status_code == 201, r.text
    before = server.counts()
    r = server.admin.post("/jobs", json={"model_id": r.json()["id"], "target": {"kind": "llvm"}, "trials": 8})
    _refused(r, 413, f"{INTAKE_MB} MiB", "TUNEHUB_INTAKE_MEMORY_MB")
    assert server.counts() == before
    assert server.peak_mb() < PEAK_MB


def test_a_model_stored_before_the_checks_still_opens_no_file(server: Server) -> None:
    from db import uploads

    with session_scope(server.factory) as s:  # as if uploaded by a version without the upload checks
        model, _ = uploads.store_model(s, name="old.onnx", content=_const_add("secret.bin"), input_shapes={"x": [4]})
    before = server.counts()
    r = server.admin.post("/jobs", json={"model_id": model.id, "target": {"kind": "llvm"}, "trials": 8})
    assert "12345" not in _refused(r, 422, "external file")
    assert server.counts() == before
    assert server.peak_mb() < PEAK_MB
