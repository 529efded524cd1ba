"""The build pool: builder sandboxes that build a batch's candidates in parallel.

Each builder sandbox belongs to one long-lived thread, because a sandbox dies with
the thread that started it (PR_SET_PDEATHSIG). A builder that crashes or hangs
costs that builder process; its candidate gets an error naming the cause.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from workers import sandbox_protocol as sp
from workers.sandbox_client import Sandbox, SandboxStartError

log = logging.getLogger("workers.build_pool")


@dataclass
class _Batch:
    """Replies of one build phase, filled in by the builder threads."""

    size: int
    replies: dict[int, sp.Reply | None | SandboxStartError] = field(default_factory=dict)
    lock: threading.Condition = field(default_factory=threading.Condition)

    def put(self, index: int, reply: sp.Reply | None | SandboxStartError) -> None:
        with self.lock:
            self.replies[index] = reply
            self.lock.notify_all()

    def wait(self, stop: threading.Event) -> None:
        with self.lock:
            while len(self.replies) < self.size and not stop.is_set():
                self.lock.wait(0.2)


class BuildPool:
    """``size`` builder sandboxes, each owned by its own long-lived thread.

    A sandbox dies with the thread that started it (PR_SET_PDEATHSIG), so each
    builder thread starts and keeps its own; the threads live as long as the pool.
    """

    def __init__(self, size: int, *, kind: str, env: dict[str, str] | None, cuda_compiler: str | None, timeout_s: float):
        self.timeout_s = timeout_s
        self._jobs: queue.Queue[tuple[int, sp.BuildRequest, _Batch] | None] = queue.Queue()
        self.sandboxes = [
            Sandbox(target_kind=kind, num_threads=1, env=env, cuda_compiler=cuda_compiler, name=f"builder-{i}")
            for i in range(size)
        ]
        self._ready = [threading.Event() for _ in self.sandboxes]
        self.start_errors: list[str] = []
        self._threads = [
            threading.Thread(target=self._serve, args=(sb, ready), name=f"builder-{i}", daemon=True)
            for i, (sb, ready) in enumerate(zip(self.sandboxes, self._ready))
        ]
        for t in self._threads:
            t.start()

    def wait_ready(self, timeout_s: float) -> None:
        """Block until every builder process has started (or failed to); raises ``SandboxStartError``
        when none could start."""
        deadline = time.monotonic() + timeout_s
        for ready in self._ready:
            ready.wait(max(0.0, deadline - time.monotonic()))
        if self.start_errors and len(self.start_errors) == len(self.sandboxes):
            raise SandboxStartError(self.start_errors[0])

    def build_all(self, requests: Sequence[sp.BuildRequest], stop: threading.Event) -> list[sp.Reply | None]:
        """One reply per request (in order), None for an interrupted one. Raises
        ``SandboxStartError`` when a builder could not start to answer."""
        batch = _Batch(size=len(requests))
        for i, req in enumerate(requests):
            self._jobs.put((i, req, batch))
        batch.wait(stop)
        replies = [batch.replies.get(i) for i in range(len(requests))]
        for reply in replies:
            if isinstance(reply, SandboxStartError):
                raise reply
        return [r for r in replies if not isinstance(r, SandboxStartError)]

    def _serve(self, sandbox: Sandbox, ready: threading.Event) -> None:
        try:
            sandbox.start()  # now, in this thread: the process lives as long as the thread
        except SandboxStartError as exc:
            self.start_errors.append(str(exc))
        finally:
            ready.set()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            index, request, batch = job
            reply: sp.Reply | None | SandboxStartError
            try:
                reply = sandbox.call(request, self.timeout_s)
            except SandboxStartError as exc:
                reply = SandboxStartError(f"builder could not start: {exc}")
            except Exception as exc:  # noqa: BLE001 - a builder thread must answer, never die
                log.exception("builder thread failed")
                reply = SandboxStartError(f"builder: {type(exc).__name__}: {exc}")
            batch.put(index, reply)

    def interrupt(self) -> None:
        for sb in self.sandboxes:
            sb.interrupt()

    def close(self) -> None:
        self.interrupt()
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=10)
        for sb in self.sandboxes:
            sb.close()
