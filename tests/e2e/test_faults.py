"""Faults with real processes on loopback: nothing measured is lost or counted twice.

- a worker killed with SIGKILL mid-lease: its candidates are leased again once
  the lease's TTL runs out, and every candidate ends measured exactly once;
- on PostgreSQL, the tuner and the API killed with SIGKILL mid-job (after the
  database dropped every connection once): the API comes back, another tuner
  process takes the job over after the grace period, the job finishes with
  exactly its budget measured;
- on PostgreSQL, every connection of the service terminated by the server
  (``pg_terminate_backend``) twice under load: the service recovers by itself;
- on PostgreSQL, two API replicas and 50 measuring stubs: no candidate leased
  twice, every one measured once.

The measuring stubs (``bench/stub_workers.py``) talk HTTP like real workers but
do not run TVM, so what is exercised is the service path. Candidates are put
straight into the queue (``db.queue.enqueue_candidates``) of a job made
through the API from the example MLP, where no tuner runs.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, make_url, select, text
from sqlalchemy.pool import NullPool
from stub_workers import FleetReport, StubFleet

from db.engine import make_engine, make_sessionmaker, session_scope
from db.models import Task
from db.queue import enqueue_candidates
from tests_support import EXAMPLES, wait_for
from common.processes import wait_healthy

pytestmark = pytest.mark.slow

STUB_TARGET: dict[str, Any] = {"kind": "llvm", "num-cores": 2}
EMPTY_TRACE = "[[],[]]"  # the workload as written: builds and checks like any schedule


def _job(stack, target: dict[str, Any], *, trials: int = 100_000, per_round: int | None = None):  # type: ignore[no-untyped-def]
    with stack.client() as client:
        model = client.upload_model(EXAMPLES / "mlp.onnx", name="mlp")
        return client.create_job(model.id, target, trials=trials, trials_per_round=per_round)


def _enqueue(stack, job_id: int, count: int, *, tasks: int | None = None) -> list[int]:  # type: ignore[no-untyped-def]
    """``count`` candidates spread over the job's first ``tasks`` tasks, as the tuner would queue them."""
    engine = make_engine(stack.db_url, null_pool=True)
    try:
        with session_scope(make_sessionmaker(engine)) as s:
            rows = s.execute(select(Task.id, Task.workload_id, Task.job_id).where(Task.job_id == job_id).order_by(Task.id)).all()
            rows = rows[:tasks] if tasks else rows
            key = s.execute(text("SELECT target_key FROM jobs WHERE id = :j"), {"j": job_id}).scalar_one()
            ids: list[int] = []
            for i, (task_id, workload_id, _) in enumerate(rows):
                n = count // len(rows) + (1 if i < count % len(rows) else 0)
                ids += enqueue_candidates(
                    s, task_id=task_id, workload_id=workload_id, target_key=key, traces=[EMPTY_TRACE] * n, round=1
                )
            return ids
    finally:
        engine.dispose()


def _terminate_backends(db_url: str) -> int:
    """Drop every other connection to this database, as a failover or a restarted server would."""
    engine = create_engine(db_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": make_url(db_url).database},
            ).scalar_one()
    finally:
        engine.dispose()


def _kill9(stack, name: str) -> None:  # type: ignore[no-untyped-def]
    proc = stack.procs[name]
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: a worker's sandbox too
    proc.wait(10)


class _Background:
    """A stub fleet run in a thread; ``join()`` returns its report."""

    def __init__(self, fleet: StubFleet) -> None:
        self.fleet = fleet
        self.report: FleetReport | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="stub-fleet", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.report = self.fleet.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in join()
            self.error = exc

    def join(self, timeout_s: float) -> FleetReport:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"the stub fleet still ran after {timeout_s:.0f} s"
        if self.error is not None:
            raise self.error
        assert self.report is not None
        return self.report


def _measured_once(stack, ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    rows = stack.sql(
        "SELECT COUNT(*), COUNT(DISTINCT candidate_id) FROM measurements WHERE candidate_id IN (%s)"
        % ",".join(str(i) for i in ids)
    )
    assert rows[0] == (len(ids), len(ids)), f"measurements (rows, distinct) {rows[0]} for {len(ids)} candidates"
    states = stack.sql("SELECT state, COUNT(*) FROM candidates GROUP BY state")
    assert dict(states) == {"done": len(ids)}, states


# --- a worker dies mid-lease -------------------------------------------------------------


def test_worker_killed_mid_lease_its_candidates_are_leased_again_after_the_ttl(stack) -> None:
    stack.overrides["TUNEHUB_CONFIRM_WINNERS"] = "false"  # counts the queue's own candidates only
    ttl = 6.0
    stack.overrides["TUNEHUB_LEASE_TTL_S"] = str(ttl)
    # The default timing (5 repeats of 20 ms or more): a candidate takes long enough to be killed between two.
    stack.overrides.update({"TUNEHUB_WORKER_REPEAT": "5", "TUNEHUB_WORKER_MIN_REPEAT_MS": "20"})
    stack.start_service(tuner=False)
    for name in ("worker-a", "worker-b"):
        stack.start_worker(name)
    with stack.client() as client:
        workers = wait_for(lambda: len(ws := client.workers()) == 2 and ws, timeout_s=180, what="two registered workers",
                           on_timeout=stack.logs)
    job = _job(stack, workers[0].target)
    ids = _enqueue(stack, job.id, 8, tasks=1)  # one workload: one reference build per worker

    def mid_lease() -> tuple[int, str, int] | None:
        rows = stack.sql(
            "SELECT l.id, w.name, SUM(CASE WHEN c.state = 'done' THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN c.state = 'leased' THEN 1 ELSE 0 END) "
            "FROM candidates c JOIN leases l ON l.id = c.lease_id JOIN workers w ON w.id = l.worker_id "
            "GROUP BY l.id, w.name"
        )
        for lease_id, holder, done, leased in rows:
            assert done < 8, "the first worker measured the whole batch before it could be killed"
            if done >= 1 and leased >= 2:
                return lease_id, holder, leased
        return None

    lease_id, holder, _ = wait_for(mid_lease, timeout_s=240, poll_s=0.1, what="a worker mid-lease",
                                   on_timeout=stack.logs)
    _kill9(stack, holder)
    killed_at = stack.sql("SELECT CURRENT_TIMESTAMP")[0][0]  # the database's clock (UTC on SQLite)
    unfinished = stack.sql(f"SELECT COUNT(*) FROM candidates WHERE lease_id = {lease_id} AND state = 'leased'")[0][0]
    assert unfinished >= 1
    survivor = "worker-b" if holder == "worker-a" else "worker-a"

    wait_for(lambda: stack.sql("SELECT COUNT(*) FROM measurements")[0][0] == 8, timeout_s=180,
             what="all 8 candidates measured", on_timeout=stack.logs)
    _measured_once(stack, ids)
    old_expiry = stack.sql(f"SELECT expires_at FROM leases WHERE id = {lease_id}")[0][0]
    relet = stack.sql(
        "SELECT c.id, c.attempts, l.created_at, w.name FROM candidates c JOIN leases l ON l.id = c.lease_id "
        "JOIN workers w ON w.id = l.worker_id WHERE c.attempts > 1"
    )
    assert len(relet) == unfinished, "exactly the killed worker's unfinished candidates were leased again"
    assert {r[1] for r in relet} == {2} and {r[3] for r in relet} == {survivor}
    def ts(v: Any) -> datetime:
        return v if isinstance(v, datetime) else datetime.fromisoformat(str(v))

    relet_at = min(ts(r[2]) for r in relet)
    # Not before the lease ran out, and within the TTL of the kill (plus the survivor's 1 s poll).
    assert ts(old_expiry) <= relet_at <= ts(killed_at) + timedelta(seconds=ttl + 3), (old_expiry, killed_at, relet_at)


# --- PostgreSQL: the database drops every connection ------------------------------------


@pytest.mark.postgres
def test_service_recovers_by_itself_when_the_database_drops_its_connections(pg_stack) -> None:
    pg_stack.overrides["TUNEHUB_CONFIRM_WINNERS"] = "false"  # counts the queue's own candidates only
    pg_stack.start_service(tuner=False)
    job = _job(pg_stack, STUB_TARGET)
    ids = _enqueue(pg_stack, job.id, 240)
    with pg_stack.client() as client:
        token = client.create_token("stubs", "worker").token
    fleet = _Background(StubFleet(servers=[pg_stack.server], token=token, target=STUB_TARGET, workers=10,
                                  think_s=0.02, expect=len(ids), deadline_s=150))
    terminated = 0
    for when in (40, 140):  # twice, under load
        wait_for(lambda: pg_stack.sql("SELECT COUNT(*) FROM measurements")[0][0] >= when, timeout_s=120, poll_s=0.1,
                 what=f"{when} measurements", on_timeout=pg_stack.logs)
        terminated += _terminate_backends(pg_stack.db_url)
    report = fleet.join(180)
    assert terminated >= 2, "the service held connections that the server dropped"
    assert report.failed_workers == [], report.failed_workers
    assert report.accepted == len(ids) and report.double_leased == []
    _measured_once(pg_stack, ids)
    assert httpx.get(pg_stack.server + "/api/v1/health", timeout=10).status_code == 200


# --- PostgreSQL: two replicas, 50 workers -------------------------------------------------


@pytest.mark.postgres
def test_two_replicas_and_50_workers_lease_every_candidate_once(pg_stack) -> None:
    pg_stack.overrides["TUNEHUB_CONFIRM_WINNERS"] = "false"  # counts the queue's own candidates only
    pg_stack.start_service(tuner=False)
    second = pg_stack.start_replica("replica-2")
    job = _job(pg_stack, STUB_TARGET)
    ids = _enqueue(pg_stack, job.id, 600)
    with pg_stack.client() as client:
        token = client.create_token("stubs", "worker").token
    report = StubFleet(servers=[pg_stack.server, second], token=token, target=STUB_TARGET, workers=50, batch=2,
                       expect=len(ids), deadline_s=150).run()
    assert report.failed_workers == [], report.failed_workers
    assert report.double_leased == [], f"{len(report.double_leased)} candidates were handed out twice"
    assert sorted(report.leased) == sorted(ids)
    assert report.accepted == len(ids) and report.ignored == 0 and report.lost_leases == 0
    _measured_once(pg_stack, ids)
    assert pg_stack.sql("SELECT MAX(attempts) FROM candidates")[0][0] == 1
    # Both replicas did the work: the stubs were spread over them and all 50 registered.
    assert pg_stack.sql("SELECT COUNT(DISTINCT worker_id) FROM measurements")[0][0] == 50


# --- PostgreSQL: the tuner and the API die mid-job ----------------------------------------


@pytest.mark.postgres
def test_tuner_and_service_killed_mid_job_another_tuner_finishes_it(pg_stack) -> None:
    pg_stack.overrides["TUNEHUB_CONFIRM_WINNERS"] = "false"  # counts the queue's own candidates only
    trials = 8
    pg_stack.overrides["TUNEHUB_LEASE_TTL_S"] = "8"  # a lease answer lost with the API comes back soon
    pg_stack.start_service(tuner=False)
    first = pg_stack.start("tuner-1", ["tuner"])
    job = _job(pg_stack, STUB_TARGET, trials=trials, per_round=2)
    with pg_stack.client() as client:
        token = client.create_token("stubs", "worker").token
    halt = threading.Event()
    fleet = _Background(StubFleet(servers=[pg_stack.server], token=token, target=STUB_TARGET, workers=3,
                                  think_s=0.3, deadline_s=400, halt=halt))

    def done_so_far() -> int:
        return pg_stack.sql("SELECT COUNT(*) FROM measurements")[0][0]

    wait_for(lambda: done_so_far() >= 1, timeout_s=240, what="first measurements", on_timeout=pg_stack.logs)
    # Every connection dropped: the API and tuner-1 carry on by themselves, tuner-1 keeps the job.
    assert _terminate_backends(pg_stack.db_url) >= 1
    before = done_so_far()
    wait_for(lambda: done_so_far() > before, timeout_s=180, what="progress after the connections dropped",
             on_timeout=pg_stack.logs)
    owner, status = pg_stack.sql(f"SELECT tuner_owner, status FROM jobs WHERE id = {job.id}")[0]
    assert status == "running" and owner.endswith(f":{first.pid}"), (owner, status, pg_stack.logs())
    if done_so_far() >= trials:
        pytest.fail("the job finished before the tuner could be killed mid-job; raise trials")

    for name in ("tuner-1", "service"):
        _kill9(pg_stack, name)
    time.sleep(1)
    pg_stack.start_service(tuner=False)  # same port: the stubs retry until it answers
    second = pg_stack.start("tuner-2", ["tuner"])

    with pg_stack.client() as client:
        final = wait_for(lambda: (j := client.job(job.id)).status.value not in ("queued", "running") and j,
                         timeout_s=300, what="the job to finish under tuner-2", on_timeout=pg_stack.logs)
    halt.set()
    report = fleet.join(60)
    assert final.status.value == "done", (final.error, pg_stack.logs())
    assert final.trials_done == trials
    owner = pg_stack.sql(f"SELECT tuner_owner FROM jobs WHERE id = {job.id}")[0][0]
    assert owner.endswith(f":{second.pid}"), owner
    rows, distinct = pg_stack.sql("SELECT COUNT(*), COUNT(DISTINCT candidate_id) FROM measurements")[0]
    assert rows == distinct == trials
    stored = {r[0] for r in pg_stack.sql("SELECT candidate_id FROM measurements")}
    assert report.failed_workers == [], report.failed_workers
    assert set(report.leased) >= stored  # every stored result came from a lease the stubs saw
    wait_healthy(pg_stack.server, timeout_s=5)
