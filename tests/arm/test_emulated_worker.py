"""An aarch64 ``tunehub worker`` executed for real, under qemu-user on this x86 machine.

``setup_aarch64_env.sh`` gives an aarch64 CPython 3.11 with the aarch64 TVM wheel
(cached under ~/.cache/tunehub-aarch64). The worker process runs that
interpreter: it detects its aarch64 target and that it is emulated, registers,
leases candidates of a small matmul job for the aarch64 target, builds them
(TVM's aarch64 codegen, linked by the cross gcc), runs them emulated and
reports. The service stores the measurements, marked emulated through the
worker's row, and keeps them out of "best": no config download is served from
them. Emulation makes TVM slow (its import alone takes ~15 s), so the job has
two trials.

Skips, with the reason, only where emulation cannot be set up (no qemu, no
network for the packages); on CI (``CI=true``) that is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import NotFound
from tests_support import wait_for
from tunehub.harness import Harness

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SETUP = HERE / "setup_aarch64_env.sh"
CANNOT_SET_UP = 2  # the setup script's exit status for "not possible on this machine"
TRIALS = 2
WORKER_FLAGS = [  # one runner, no calibration, one timed run: the path, not the numbers
    "--build-workers", "0", "--no-pin", "--calibrate-every-s", "0", "--number", "1", "--repeat", "1",
    "--min-repeat-ms", "0", "--warmup", "0", "--no-cache-flush", "--max-candidates", str(TRIALS),
    "--build-timeout-s", "600", "--run-timeout-s", "600",
]


@pytest.fixture(scope="module")
def aarch64_python() -> str:
    """The emulated interpreter's wrapper (set up once, then cached)."""
    proc = subprocess.run(
        ["bash", str(SETUP)],
        env={**os.environ, "TUNEHUB_HOST_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode == CANNOT_SET_UP and os.environ.get("CI") != "true":
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, f"setup_aarch64_env.sh failed ({proc.returncode}):\n{proc.stderr}"
    return proc.stdout.strip().splitlines()[-1]


def matmul_onnx(path: Path, m: int = 16, k: int = 32, n: int = 16) -> Path:
    """A one-MatMul ONNX model (weights as an initializer): one small tuning task."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n)).astype("float32"), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with Harness(tmp_path, overrides={"TUNEHUB_LEASE_TTL_S": "120"}) as h:
        yield h


def sql(harness: Harness, query: str) -> list[tuple]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(harness.db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(query))]
    finally:
        engine.dispose()


def start_emulated_worker(harness: Harness, python: str, name: str = "arm-emulated") -> None:
    """``tunehub worker`` on the aarch64 interpreter, as one of the harness's processes."""
    with harness.client() as client:
        token = client.create_token(name, "worker").token
    log = harness.log(name).open("ab")
    try:
        harness.procs[name] = subprocess.Popen(
            [python, "-m", "tunehub", "worker", "--server", harness.server, "--token", token, "--name", name,
             *WORKER_FLAGS],
            env={**os.environ, **harness.env(), "PYTHONPATH": str(REPO)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()
    harness.worker_names.add(name)


def test_emulated_aarch64_worker_measures_a_job(aarch64_python: str, harness: Harness, tmp_path: Path) -> None:
    harness.start_service()
    start_emulated_worker(harness, aarch64_python)
    (worker,) = harness.wait_for_workers(1, timeout_s=600)
    assert worker.target["mtriple"] == "aarch64-linux-gnu", worker.target
    assert "+neon" in worker.target["mattr"]
    assert worker.emulated, "qemu-user is detected without a flag"

    with harness.client() as client:
        model = client.upload_model(matmul_onnx(tmp_path / "matmul.onnx"), name="matmul")
        job = client.create_job(model.id, worker.target, trials=TRIALS, trials_per_round=TRIALS)
        job = wait_for(
            lambda: (j := client.job(job.id)).status.value not in ("queued", "running") and j,
            timeout_s=1500, what=f"job {job.id} to end", on_timeout=harness.logs,
        )
        assert job.status.value == "done", (job.error, harness.logs())

        # Every trial was measured by the emulated worker, at least one with a time.
        rows = sql(harness, "SELECT m.mean_secs, m.error, w.emulated, w.hardware_json FROM measurements m "
                            "JOIN workers w ON w.id = m.worker_id")
        assert len(rows) == TRIALS, (rows, harness.logs())
        assert all(emulated for _, _, emulated, _ in rows)
        timed = [mean for mean, error, _, _ in rows if mean is not None]
        assert timed, ([error for _, error, _, _ in rows], harness.logs())
        assert all(mean > 0 for mean in timed)
        assert '"machine": "aarch64"' in rows[0][3] and '"emulated": ' in rows[0][3]

        # Stored, never served: the aarch64 target has no best config from emulated timings.
        with pytest.raises(NotFound):
            client.download_configs(job=job.id)
