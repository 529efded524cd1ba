"""Keeps one sandbox process alive for the daemon and turns its deaths into results.

A candidate that segfaults, aborts, hangs or wedges the process costs that one
process: ``call`` (any op) and ``measure`` return an error naming the signal or
the timeout, and the next call starts a fresh sandbox. Nothing a candidate does raises here, so the
daemon's loop never dies of it; only a sandbox that cannot start at all raises
``SandboxStartError`` (the machine, not the candidate, is broken then).
"""

from __future__ import annotations

import collections
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from pydantic import BaseModel

from common.protocol import ErrorKind, MeasurementOutcome
from workers import sandbox_protocol as sp

log = logging.getLogger("workers.sandbox")

STDERR_TAIL_LINES = 20
_BACKTRACE_LINE = re.compile(r'^\s*(File "|!!!!!!! |Stack trace|\d+: 0x|Traceback \(most recent)')


def outcome_from_reply(reply: sp.Reply) -> MeasurementOutcome:
    """A run or measure reply as the one outcome type."""
    if isinstance(reply, sp.Failed):
        return MeasurementOutcome.failed(reply.error_kind, reply.error)
    if isinstance(reply, sp.Timed):
        return MeasurementOutcome(run_secs=list(reply.run_secs))
    return MeasurementOutcome.failed(ErrorKind.crash, f"sandbox protocol error: no run_secs in {reply!r}"[:500])


class SandboxStartError(RuntimeError):
    """The sandbox process did not come up (bad install, no memory, ...)."""


class _Died(Exception):
    """The process closed its stdout: it is dead or dying."""


class _Unreadable(Exception):
    """The process wrote a line that is not a reply."""


def _exit_reason(returncode: int | None) -> str:
    if returncode is None:
        return "closed its output but did not exit"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass
class _Process:
    """One running sandbox and what it already holds."""

    popen: subprocess.Popen[bytes]
    stderr_tail: collections.deque[str]
    stderr_thread: threading.Thread
    known: set[str] = field(default_factory=set)  # workload hashes sent to this process
    buf: bytes = b""

    def send(self, message: BaseModel) -> None:
        assert self.popen.stdin is not None
        try:
            self.popen.stdin.write(message.model_dump_json(exclude_none=True).encode() + b"\n")
            self.popen.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise _Died() from exc

    def read(self, deadline: float) -> sp.Reply | None:
        """The next reply, or None at the deadline; raises _Died at EOF, _Unreadable for a bad line."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise _Died()
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        try:
            return sp.REPLY.validate_json(line)
        except ValueError:  # pydantic's ValidationError is a ValueError
            raise _Unreadable(f"sandbox protocol error: unreadable reply {line[:200]!r}") from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()

    def reap(self) -> str:
        """Wait for the process and describe how it ended, with its last words."""
        try:
            returncode: int | None = self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            returncode = self.popen.wait()
        self.stderr_thread.join(timeout=1)  # drain the last stderr lines
        for stream in (self.popen.stdin, self.popen.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        return _exit_reason(returncode)

    def last_words(self, lines: int = 3) -> str:
        tail = [line for line in self.stderr_tail if line.strip()][-lines:]
        text = " | ".join(tail)
        return text[-500:]


def _pump_stderr(stream: IO[bytes], tail: collections.deque[str], pid: int) -> None:
    """Keep the child's stderr drained (a full pipe would block it) and logged."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        log.debug("sandbox[%d]: %s", pid, line)
        # TVM's crash handler prints a long C backtrace; the message before it is what helps.
        if not _BACKTRACE_LINE.match(line):
            tail.append(line)
    stream.close()


class Sandbox:
    """A long-lived ``python -m workers.sandbox`` child, restarted after each death.

    Use from one thread; ``close()`` may be called from any thread and
    interrupts a measurement in flight. On Linux the child dies with the
    *thread* that started it (PR_SET_PDEATHSIG), so no sandbox outlives a
    killed daemon: start it from the thread that keeps using it. Sends each
    workload's ``mod_json`` only the first time a given process needs it.
    ``cpus`` pins one measuring thread to each CPU; ``cuda_compiler`` (nvcc or
    nvrtc) is how a CUDA sandbox turns CUDA source into a binary.
    """

    def __init__(
        self,
        *,
        target_kind: str = "llvm",
        num_threads: int | None = None,
        env: dict[str, str] | None = None,
        start_timeout_s: float = 180.0,
        python: str | None = None,
        cpus: list[int] | None = None,
        cuda_compiler: str | None = None,
        name: str = "sandbox",
    ):
        self.target_kind = target_kind
        self.num_threads = num_threads
        self.cpus = list(cpus or [])
        self.cuda_compiler = cuda_compiler
        self.name = name
        self.start_timeout_s = start_timeout_s
        self._python = python or sys.executable
        self._extra_env = dict(env or {})
        self._proc: _Process | None = None
        self._io = threading.Lock()  # held for a whole request/reply exchange
        self._closed = threading.Event()
        self._seq = 0
        self.starts = 0  # processes started so far (for logs and tests)
        self.ready: sp.Ready | None = None  # the last process's ready line (pid, tvm, cpus)
        self.in_flight: str | None = None  # the op of the request being answered now (observable by tests)

    # --- public -------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.popen.pid if proc is not None and proc.popen.poll() is None else None

    def knows(self, workload_hash: str) -> bool:
        """Whether the live process already holds this workload (no reference build to pay)."""
        proc = self._proc
        return proc is not None and workload_hash in proc.known

    def start(self) -> None:
        """Start the process now rather than at the first ``measure``."""
        with self._io:
            if self._closed.is_set():
                raise SandboxStartError("sandbox is closed")
            self._ensure()

    def measure(self, request: sp.Request | dict[str, Any], timeout_s: float) -> MeasurementOutcome | None:
        """Measure one candidate; None when the sandbox was closed under it (that says
        nothing about the candidate).

        Anything the candidate causes is an outcome with an error: build error,
        wrong output, crash (``sandbox crashed: killed by SIGSEGV``), or no reply
        within ``timeout_s`` (``timeout: no result after N s``).
        """
        reply = self.call(request, timeout_s)
        return None if reply is None else outcome_from_reply(reply)

    def call(self, request: sp.Request | dict[str, Any], timeout_s: float) -> sp.Reply | None:
        """Send one request (a model, or its JSON dict) and return the reply; None when the
        sandbox was closed under it. Never raises for what a candidate does.

        A crash answers ``Failed(crash, "sandbox crashed: killed by SIGSEGV; last output: ...")``,
        no reply within ``timeout_s`` ``Failed(timeout, "timeout: no result after N s")`` (the
        process is killed and the next call starts another). Raises ``SandboxStartError``
        only when no process can be started.
        """
        message = sp.REQUEST.validate_python(request) if isinstance(request, dict) else request
        with self._io:
            self.in_flight = message.op
            try:
                return self._call_locked(message, timeout_s)
            finally:
                self.in_flight = None

    def _call_locked(self, request: sp.Request, timeout_s: float) -> sp.Reply | None:
        if self._closed.is_set():
            return None
        try:
            proc = self._ensure()
        except SandboxStartError:
            if self._closed.is_set():
                return None
            raise
        key = getattr(request, "workload_hash", "")
        sent_workload = bool(key) and key not in proc.known and getattr(request, "mod_json", None) is not None
        msg = request if not key or sent_workload else request.model_copy(update={"mod_json": None})
        deadline = time.monotonic() + timeout_s
        try:
            reply = self._exchange(proc, msg, deadline)
            if isinstance(reply, sp.Failed) and reply.missing_workload and getattr(request, "mod_json", None):
                sent_workload = True  # the process lost or never had it
                reply = self._exchange(proc, request, deadline)
        except _Died:
            reason = proc.reap()
            self._proc = None
            if self._closed.is_set():
                return None
            words = proc.last_words()
            log.warning("%s %d crashed (%s): %s", self.name, proc.popen.pid, reason, words)
            return sp.failed(ErrorKind.crash, f"sandbox crashed: {reason}" + (f"; last output: {words}" if words else ""))
        except _Unreadable as exc:
            self._discard(proc)
            return sp.failed(ErrorKind.crash, str(exc))
        if reply is None:
            self._discard(proc)
            if self._closed.is_set():
                return None
            log.warning("%s %d timed out after %g s; killed", self.name, proc.popen.pid, timeout_s)
            return sp.failed(ErrorKind.timeout, f"timeout: no result after {timeout_s:g} s")
        if sent_workload:
            proc.known.add(key)
        if reply.id != self._seq:
            self._discard(proc)
            return sp.failed(ErrorKind.crash, f"sandbox protocol error: reply {reply!r} to {self._seq}")
        return reply

    def _discard(self, proc: _Process) -> None:
        proc.kill()
        proc.reap()
        self._proc = None

    def interrupt(self) -> None:
        """Kill the process without waiting: a ``measure`` in flight returns ``interrupted``.

        Takes no lock, so it is safe in a signal handler that may have
        interrupted ``measure`` on the same thread. The sandbox stays closed.
        """
        self._closed.set()
        proc = self._proc
        if proc is not None:
            proc.kill()

    def close(self) -> None:
        """Kill the process and reap it; idempotent. From a signal handler use ``interrupt``."""
        self.interrupt()
        with self._io:
            proc, self._proc = self._proc, None
            if proc is not None:
                proc.kill()
                proc.reap()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ------------------------------------------------------------

    def _exchange(self, proc: _Process, msg: sp.Request, deadline: float) -> sp.Reply | None:
        self._seq += 1
        proc.stderr_tail.clear()  # last words should be this request's
        proc.send(msg.model_copy(update={"id": self._seq}))
        return proc.read(deadline)

    def _ensure(self) -> _Process:
        if self._proc is not None and self._proc.popen.poll() is None:
            return self._proc
        if self._proc is not None:  # died between requests
            self._proc.reap()
            self._proc = None
        return self._spawn()

    def _spawn(self) -> _Process:
        env = dict(os.environ)
        env.update(self._extra_env)
        env[sp.PARENT_PID_ENV] = str(os.getpid())
        cmd = [self._python, "-m", "workers.sandbox", "--kind", self.target_kind]
        threads = len(self.cpus) or self.num_threads
        if threads:
            env["TVM_NUM_THREADS"] = str(threads)
            cmd += ["--num-threads", str(threads)]
        if self.cpus:
            cmd += ["--cpus", ",".join(str(c) for c in self.cpus)]
        if self.cuda_compiler:
            cmd += ["--cuda-compiler", self.cuda_compiler]
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the daemon, which closes us itself
        )
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        assert popen.stderr is not None
        pump = threading.Thread(
            target=_pump_stderr, args=(popen.stderr, tail, popen.pid), name=f"sandbox-stderr-{popen.pid}", daemon=True
        )
        pump.start()
        proc = _Process(popen=popen, stderr_tail=tail, stderr_thread=pump)
        self._proc = proc  # visible to close() while we wait for it to come up
        self.starts += 1
        try:
            ready = proc.read(time.monotonic() + self.start_timeout_s)
        except (_Died, _Unreadable):
            self._proc = None
            proc.kill()
            reason = proc.reap()
            raise SandboxStartError(f"sandbox {reason} while starting: {proc.last_words(10)}") from None
        if not isinstance(ready, sp.Ready):
            self._proc = None
            proc.kill()
            reason = proc.reap()
            what = "no ready line" if ready is None else f"unexpected first line {ready!r}"
            raise SandboxStartError(
                f"sandbox did not start within {self.start_timeout_s:g} s ({what}; {reason}): {proc.last_words(10)}"
            )
        self.ready = ready
        log.info(
            "%s %d started (tvm %s, %s threads%s)",
            self.name,
            popen.pid,
            ready.tvm,
            threads or "default",
            f", pinned to CPUs {ready.cpus}" if self.cpus else "",
        )
        return proc
