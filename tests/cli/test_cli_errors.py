"""The CLI as a person meets it: every failure is one or two lines saying what to do, and a non-zero exit code.

The real ``python -m tunehub`` runs as a subprocess against a real service on
loopback (or a closed port): unreachable service, refused token (401 and 403),
a 4xx from the API, a missing or unreadable file, Ctrl-C during a wait, and
``--debug`` bringing the traceback back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from common.processes import free_port
from common.settings import Settings
from service.app import admin_token_path, create_app
from tests_support import EXAMPLES, wait_for

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "service"))
from live_server import serve  # noqa: E402  (tests/service is not a package)

LLVM = '{"kind":"llvm","num-cores":1}'


@dataclass(frozen=True)
class Service:
    url: str
    admin: str

    def token(self, role: str) -> str:
        r = httpx.post(f"{self.url}/api/v1/tokens", json={"name": f"cli-{role}", "role": role},
                       headers={"Authorization": f"Bearer {self.admin}"})
        assert r.status_code == 201, r.text
        return r.json()["token"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A live service without tuner: jobs stay queued, so a wait lasts until interrupted."""
    data = tmp_path_factory.mktemp("svc")
    settings = Settings(data_dir=data, database_url=f"sqlite:///{data / 'db.sqlite'}", admin_token=None)
    with serve(create_app(settings)) as url:
        yield Service(url, admin_token_path(settings).read_text().strip())


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEHUB_")}
    # An empty data dir: the CLI must not find an admin token lying around.
    env.update(PYTHONPATH=str(ROOT), TUNEHUB_DATA_DIR=str(tmp_path / "cli-data"), COLUMNS="200", **extra)
    return env


def tunehub(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tunehub", *args], cwd=tmp_path, env=_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=120)


def _lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def assert_explained(proc: subprocess.CompletedProcess[str], *phrases: str, code: int = 1) -> str:
    """Exit ``code``, one or two lines, each phrase in them, no traceback."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert "Traceback" not in out, out
    assert 1 <= len(_lines(proc)) <= 2, out
    for phrase in phrases:
        assert phrase in out, out
    return out


def test_unreachable_service_names_the_url_and_how_to_change_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    proc = tunehub(tmp_path, "submit", str(EXAMPLES / "mlp.onnx"), "--target", LLVM, TUNEHUB_SERVER=url)
    assert_explained(proc, f"cannot reach the tunehub service at {url}", "--server", "TUNEHUB_SERVER")
    for args in (["status", "1"], ["configs", "--job", "1", "-o", "out"], ["token", "create", "x"],
                 ["configs", "--best-known", "--target", LLVM, "-o", "out"],
                 ["records", "export", "-o", "out", "--target", LLVM, "--token", "t"]):
        assert_explained(tunehub(tmp_path, *args, "--server", url), f"cannot reach the tunehub service at {url}")


def test_refused_token_says_how_to_pass_one(tmp_path: Path, service: Service) -> None:
    proc = tunehub(tmp_path, "status", "1", "--server", service.url, "--token", "not-a-token")
    assert_explained(proc, "refused the token", "--token", "TUNEHUB_TOKEN")
    proc = tunehub(tmp_path, "status", "1", "--server", service.url)  # no token at all
    assert_explained(proc, "refused the token", "missing token")


def test_token_without_the_role_is_told_so(tmp_path: Path, service: Service) -> None:
    proc = tunehub(tmp_path, "token", "create", "someone", "--server", service.url, "--token", service.token("user"))
    assert_explained(proc, "may not do this", "role admin")


def test_client_error_from_the_api_is_one_line(tmp_path: Path, service: Service) -> None:
    proc = tunehub(tmp_path, "status", "987654", "--server", service.url, "--token", service.admin)
    out = assert_explained(proc, "404", "987654")
    assert len(_lines(proc)) == 1, out
    proc = tunehub(tmp_path, "configs", "--model", "1", "-o", "out", "--server", service.url, "--token", service.admin)
    assert_explained(proc, "name a job")  # 422: a model needs a target


def test_missing_or_unreadable_file(tmp_path: Path, service: Service) -> None:
    token = service.token("user")
    proc = tunehub(tmp_path, "submit", "nothere.onnx", "--target", LLVM, "--server", service.url, "--token", token)
    assert_explained(proc, "No such file", "nothere.onnx")
    # Unreadable: a folder where a file belongs (the tests run as root, so permissions cannot refuse a read).
    (tmp_path / "folder.onnx").mkdir()
    proc = tunehub(tmp_path, "submit", "folder.onnx", "--target", LLVM, "--server", service.url, "--token", token)
    assert_explained(proc, "folder.onnx")
    proc = tunehub(tmp_path, "compile", "nothere.onnx", "--target", LLVM)
    assert_explained(proc, "nothere.onnx")


def test_ctrl_c_during_a_wait_says_the_job_goes_on(tmp_path: Path, service: Service) -> None:
    token = service.token("user")
    child = subprocess.Popen(
        [sys.executable, "-m", "tunehub", "submit", str(EXAMPLES / "mlp.onnx"), "--target", LLVM, "--wait",
         "--server", service.url, "--token", token],
        cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        def job_created() -> bool:
            r = httpx.get(f"{service.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
            return r.status_code == 200 and bool(r.json())

        # No tuner runs here: the job stays queued and the CLI waits on it until interrupted.
        wait_for(job_created, timeout_s=120, what="the CLI to create its job", poll_s=0.2)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
    text = out + err
    assert child.returncode == 130, text
    assert "Traceback" not in text, text
    assert "interrupted" in err, text
    assert len([line for line in err.splitlines() if line.strip()]) <= 2, text
    assert proc.returncode == 130


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = tunehub(tmp_path, "--debug", "status", "1", "--server", url)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ConnectError" in proc.stderr
    assert f"cannot reach the tunehub service at {url}" in proc.stderr
