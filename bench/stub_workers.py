"""A fleet of measuring stub workers: the service's lease path under load, without TVM.

Each stub does what ``tunehub worker`` does over HTTP, minus the measuring:
register (``POST /workers``), then loop ``POST /leases`` → (optionally "measure"
for ``think_s``) → ``POST /leases/{id}/results`` with plausible ``run_secs``.
It never imports TVM, so hundreds of them fit in one asyncio loop and the time
measured is the service's (HTTP, auth, the queue transaction), not the worker's.

Used by ``bench/queue_throughput.py`` and by the fault tests
(``tests/e2e/test_faults.py``). Every loop is bounded twice: by a deadline and
by a count (round trips per stub, consecutive transient failures). Transient
failures (connection refused/reset, timeouts, 5xx, 429) are retried with a
short capped backoff, as the real worker does, and counted in the report.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

API = "/api/v1"


@dataclass
class FleetReport:
    """What a fleet run saw; latencies in seconds, ``done_at`` relative to the fleet's start."""

    workers: int
    servers: int
    elapsed_s: float
    accepted: int = 0  # candidates the service stored (ack.accepted)
    ignored: int = 0  # results the service ignored (duplicates, lost leases)
    empty_leases: int = 0
    lost_leases: int = 0  # 409 on a report: the lease expired under us
    transient: Counter[str] = field(default_factory=Counter)  # "503", "ConnectError", ...
    failed_workers: list[str] = field(default_factory=list)  # stubs that gave up, with why
    leased: Counter[int] = field(default_factory=Counter)  # candidate id -> times handed out in a lease
    # One entry per completed round trip (a lease that had work, then its report).
    done_at: list[float] = field(default_factory=list)
    lease_s: list[float] = field(default_factory=list)
    report_s: list[float] = field(default_factory=list)
    round_trip_s: list[float] = field(default_factory=list)

    @property
    def round_trips(self) -> int:
        return len(self.round_trip_s)

    @property
    def double_leased(self) -> list[int]:
        """Candidates handed out more than once (fine after an expiry, a bug otherwise)."""
        return sorted(cid for cid, n in self.leased.items() if n > 1)

    def window(self, start_s: float, end_s: float) -> tuple[int, list[float], list[float], list[float]]:
        """(round trips, lease, report, round-trip latencies) of round trips that ended in [start, end)."""
        idx = [i for i, t in enumerate(self.done_at) if start_s <= t < end_s]
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return len(idx), pick(self.lease_s), pick(self.report_s), pick(self.round_trip_s)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class _Transient(Exception):
    """The request may not have reached the service, or its answer did not come back."""


class _Connection:
    """One keep-alive HTTP/1.1 connection to a loopback service: JSON POSTs, (status, JSON) back.

    Deliberately tiny instead of httpx: the stubs share the machine with the
    service they load, and a general client spent more CPU per request than the
    service did (so the bench measured the client). Only what uvicorn answers
    is handled: a Content-Length body, keep-alive or ``Connection: close``.
    """

    def __init__(self, server: str, token: str, timeout_s: float) -> None:
        url = urlsplit(server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.prefix = url.path.rstrip("/") + API
        self.timeout_s = timeout_s
        self._head = f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        payload = json.dumps(body).encode()
        request = f"POST {self.prefix}{path} HTTP/1.1\r\n{self._head}Content-Length: {len(payload)}\r\n\r\n".encode()
        try:
            return await asyncio.wait_for(self._exchange(request + payload), self.timeout_s)
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError) as exc:
            self.close()
            raise _Transient(type(exc).__name__) from exc

    async def _exchange(self, data: bytes) -> tuple[int, Any]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(data)
        head = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        status = int(head[9:12])
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name == "content-length":
                length = int(value)
        raw = await self._reader.readexactly(length) if length else b""
        if "connection: close" in head:
            self.close()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


class _GiveUp(Exception):
    pass


@dataclass
class StubFleet:
    """``workers`` stubs spread round-robin over ``servers``, all with one worker token.

    ``expect``: stop once this many candidates were accepted in all (None: run
    to the deadline). ``deadline_s`` counts from the end of registering (itself
    bounded by ``register_timeout_s``). ``batch``: candidates asked per lease.
    ``think_s``: a pretend measurement per lease. ``max_round_trips``: a cap
    per stub. ``halt``: an event another thread sets to stop the fleet.
    """

    servers: list[str]
    token: str
    target: dict[str, Any]
    workers: int = 10
    batch: int = 1
    think_s: float = 0.0
    idle_s: float = 0.05
    deadline_s: float = 60.0
    expect: int | None = None
    max_round_trips: int = 1_000_000
    max_consecutive_failures: int = 200
    name_prefix: str = "stub"
    http_timeout_s: float = 30.0
    register_timeout_s: float = 120.0
    seed: int = 0
    halt: threading.Event | None = None  # set from another thread to stop the fleet early

    def register(self) -> None:
        """Register every stub now (the first registration makes a service import TVM),
        so that a later ``run()`` times leasing alone; ``run()`` registers when this was not called."""
        self._registered = asyncio.run(self._register_all(FleetReport(self.workers, len(self.servers), 0.0)))

    def run(self) -> FleetReport:
        """Run the fleet to ``expect`` accepted results or the deadline, whichever comes first."""
        return asyncio.run(self._run())

    def _connections(self) -> list[_Connection]:
        # One connection per stub, as each real worker has its own.
        return [_Connection(self.servers[i % len(self.servers)], self.token, self.http_timeout_s) for i in range(self.workers)]

    async def _register_all(self, report: FleetReport) -> list[int | None]:
        conns = self._connections()
        try:
            # Registering is bounded on its own: the deadline is for the lease loop.
            register_by = time.perf_counter() + self.register_timeout_s
            return list(await asyncio.gather(*(self._register(conns[i], i, report, register_by) for i in range(self.workers))))
        finally:
            for c in conns:
                c.close()

    async def _run(self) -> FleetReport:
        report = FleetReport(workers=self.workers, servers=len(self.servers), elapsed_s=0.0)
        ids = getattr(self, "_registered", None) or await self._register_all(report)
        conns = self._connections()
        stop = asyncio.Event()
        try:
            start = time.perf_counter()
            hard_deadline = start + self.deadline_s
            loops = [
                asyncio.create_task(
                    self._loop(conns[i], wid, i, report, stop, start, hard_deadline), name=f"{self.name_prefix}-{i}"
                )
                for i, wid in enumerate(ids)
                if wid is not None
            ]
            await asyncio.gather(*loops)
            report.elapsed_s = time.perf_counter() - start
        finally:
            for c in conns:
                c.close()
        return report

    async def _post(
        self, conn: _Connection, path: str, body: dict[str, Any], report: FleetReport, deadline: float
    ) -> tuple[int, Any]:
        """POST, retrying transient failures with a capped backoff; (status, JSON) of any other answer."""
        delay, failures = 0.02, 0
        while True:
            try:
                status, reply = await conn.post(path, body)
                if status < 500 and status not in (408, 429):
                    return status, reply
                why = str(status)
            except _Transient as exc:
                why = str(exc)
            report.transient[why] += 1
            failures += 1
            if failures >= self.max_consecutive_failures or time.perf_counter() + delay > deadline:
                raise _GiveUp(f"{path}: {failures} transient failures in a row, last {why}")
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(1.0, delay * 2)

    async def _register(self, conn: _Connection, i: int, report: FleetReport, deadline: float) -> int | None:
        body = {"name": f"{self.name_prefix}-{i}", "hardware": {"stub": True}, "target": self.target}
        try:
            status, reply = await self._post(conn, "/workers", body, report, deadline)
        except _GiveUp as exc:
            report.failed_workers.append(f"{body['name']}: {exc}")
            return None
        if status != 201:
            report.failed_workers.append(f"{body['name']}: register -> {status} {str(reply)[:200]}")
            return None
        return int(reply["id"])

    async def _loop(
        self,
        conn: _Connection,
        worker_id: int,
        i: int,
        report: FleetReport,
        stop: asyncio.Event,
        start: float,
        deadline: float,
    ) -> None:
        rng = random.Random(self.seed * 100_003 + i)
        name = f"{self.name_prefix}-{i}"
        try:
            for _ in range(self.max_round_trips):
                if stop.is_set() or time.perf_counter() >= deadline or (self.halt is not None and self.halt.is_set()):
                    return
                t_lease = time.perf_counter()
                status, lease = await self._post(
                    conn, "/leases", {"worker_id": worker_id, "max_candidates": self.batch}, report, deadline
                )
                t_leased = time.perf_counter()
                if status != 200:
                    report.failed_workers.append(f"{name}: lease -> {status} {str(lease)[:200]}")
                    return
                if lease["lease_id"] is None or not lease["candidates"]:
                    report.empty_leases += 1
                    await asyncio.sleep(self.idle_s)
                    continue
                cids = [c["id"] for c in lease["candidates"]]
                report.leased.update(cids)
                if self.think_s:
                    await asyncio.sleep(self.think_s)
                t_report = time.perf_counter()
                results = [{"candidate_id": cid, "run_secs": [rng.uniform(1e-4, 2e-3)]} for cid in cids]
                status, ack = await self._post(
                    conn, f"/leases/{lease['lease_id']}/results", {"worker_id": worker_id, "results": results}, report, deadline
                )
                t_done = time.perf_counter()
                if status == 409:
                    report.lost_leases += 1
                    continue
                if status != 200:
                    report.failed_workers.append(f"{name}: report -> {status} {str(ack)[:200]}")
                    return
                report.accepted += len(ack["accepted"])
                report.ignored += len(ack["ignored"])
                report.done_at.append(t_done - start)
                report.lease_s.append(t_leased - t_lease)
                report.report_s.append(t_done - t_report)
                report.round_trip_s.append((t_leased - t_lease) + (t_done - t_report))
                if self.expect is not None and report.accepted >= self.expect:
                    stop.set()
        except _GiveUp as exc:
            report.failed_workers.append(f"{name}: {exc}")
