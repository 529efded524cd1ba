"""Starting and stopping tunehub's own processes (serve, tuner, worker).

Used by ``tunehub serve`` (which runs a tuner beside the API), ``tunehub demo``
and the live-process tests, so each starts children the same way.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent(sig: int = signal.SIGTERM, *, parent_pid: int | None = None) -> None:
    """Linux: have the kernel send this process ``sig`` when its parent dies (PR_SET_PDEATHSIG),
    so a killed ``serve`` or worker leaves no orphan tuner or sandbox.

    "Parent" is the *thread* that started this process. With ``parent_pid``, exit at once
    when the parent is already gone (it died before the request took effect).
    """
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(sig))
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def _die_with_this_process(parent_pid: int) -> None:
    die_with_parent(signal.SIGTERM, parent_pid=parent_pid)


def spawn(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Run ``python -m tunehub <args>`` as a child in its own process group.

    Output goes to ``log`` when given, else to this process's own stdout/stderr.
    """
    out = log.open("ab") if log else None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "tunehub", *args],
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=functools.partial(_die_with_this_process, os.getpid()) if die_with_parent else None,
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


def stop(proc: subprocess.Popen[bytes], *, timeout_s: float = 15.0) -> int | None:
    """SIGTERM, wait, then SIGKILL the whole group; idempotent."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return proc.poll()
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait(5)


def wait_healthy(server: str, *, timeout_s: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until GET /api/v1/health answers 200; fail fast if ``proc`` died."""
    import httpx

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the service exited with code {proc.returncode} before it answered")
        try:
            if httpx.get(f"{server}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"no answer from {server} within {timeout_s:.0f} s: {last}")
