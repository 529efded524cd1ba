"""db/queue.py on SQLite and PostgreSQL: leases, expiry, idempotent results, concurrency."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db import jobs, queue, uploads, workers, workloads
from db.engine import as_utc, db_now, session_scope
from db.models import Candidate, Lease, Measurement
from common.errors import BadInput, LeaseLost, NotFound
from common.protocol import CandidateResult, ErrorKind, MeasurementOutcome

KEY = '{"keys":["cpu"],"kind":"llvm","num-cores":2}'
TTL = 60.0


@dataclass(frozen=True)
class _Wl:
    shash: str
    mod_json: str = "{}"  # opaque to db/: the queue never reads it
    args_info_json: str = "[]"
    flops: float | None = None


@dataclass
class World:
    factory: sessionmaker[Session]
    task_id: int
    workload_id: int
    workers: list[int]

    def enqueue(self, n: int) -> list[int]:
        with session_scope(self.factory) as s:
            return queue.enqueue_candidates(
                s, task_id=self.task_id, workload_id=self.workload_id, target_key=KEY, traces=["[[],[]]"] * n, round=0
            )

    def lease(self, worker: int, n: int = 100) -> tuple[int | None, list[int]]:
        with session_scope(self.factory) as s:
            lease, cands = queue.lease_candidates(s, worker_id=self.workers[worker], target_key=KEY, max_count=n, ttl_s=TTL)
            return (lease.id if lease else None), [c.id for c in cands]

    def complete(self, worker: int, lease_id: int, results: list[CandidateResult]):  # type: ignore[no-untyped-def]
        with session_scope(self.factory) as s:
            return queue.complete(s, lease_id=lease_id, worker_id=self.workers[worker], results=results)

    def expire(self, lease_id: int) -> None:
        with session_scope(self.factory) as s:
            s.execute(update(Lease).where(Lease.id == lease_id).values(expires_at=db_now(s) - timedelta(seconds=1)))

    def measurements(self) -> int:
        with session_scope(self.factory) as s:
            return s.execute(select(func.count()).select_from(Measurement)).scalar_one()

    def states(self, ids: list[int]) -> set[str]:
        with session_scope(self.factory) as s:
            return set(s.scalars(select(Candidate.state).where(Candidate.id.in_(ids))))


@pytest.fixture
def world(session_factory: sessionmaker[Session]) -> World:
    with session_scope(session_factory) as s:
        model, _ = uploads.store_model(s, name="m", content=b"onnx", input_shapes={})
        wid = workloads.upsert_workloads(s, extracted=[_Wl("123")])["123"]
        job = jobs.create_job(s, model_id=model.id, target_json={"kind": "llvm"}, target_key=KEY, trials=8,
                                 trials_per_round=4, tasks=[("t", 1, wid)])
        task_id = jobs.job_public(s, job_id=job).tasks[0].id
        worker_ids = [
            workers.register_worker(
                s, name=f"w{i}", token_id=None, hardware={}, target_json={"kind": "llvm"}, target_key=KEY
            ).id
            for i in range(4)
        ]
    return World(session_factory, task_id, wid, worker_ids)


def ok(cid: int, secs: float = 1e-3) -> CandidateResult:
    return CandidateResult(candidate_id=cid, run_secs=[secs])


def test_expired_lease_is_leased_again(world: World) -> None:
    cids = world.enqueue(3)
    lid, got = world.lease(0)
    assert got == cids and world.lease(1) == (None, [])
    world.expire(lid)  # type: ignore[arg-type]
    lid2, again = world.lease(1)
    assert again == cids and lid2 != lid
    with session_scope(world.factory) as s:
        assert set(s.scalars(select(Candidate.attempts).where(Candidate.id.in_(cids)))) == {2}
        old = s.get(Lease, lid)
        assert old is not None and old.released_at is not None


def test_a_duplicate_report_counts_once(world: World) -> None:
    cids = world.enqueue(2)
    lid, _ = world.lease(0)
    assert lid is not None
    first = world.complete(0, lid, [ok(cids[0]), CandidateResult(candidate_id=cids[1], error="crash")])
    assert first.accepted == cids and first.ignored == []
    again = world.complete(0, lid, [ok(cids[0], 5e-3), ok(cids[1])])
    assert again.accepted == [] and again.ignored == cids
    with session_scope(world.factory) as s:
        rows = s.scalars(select(Measurement).order_by(Measurement.candidate_id)).all()
        assert [(m.candidate_id, m.mean_secs, m.error) for m in rows] == [(cids[0], 1e-3, None), (cids[1], None, "crash")]


def test_results_for_an_expired_and_re_leased_lease_are_ignored(world: World) -> None:
    cids = world.enqueue(2)
    lid, _ = world.lease(0)
    world.expire(lid)  # type: ignore[arg-type]
    lid2, _ = world.lease(1)
    assert world.complete(0, lid, [ok(c) for c in cids]).ignored == cids  # type: ignore[arg-type]
    assert world.complete(1, lid2, [ok(c, 2e-3) for c in cids]).accepted == cids  # type: ignore[arg-type]
    with session_scope(world.factory) as s:
        assert set(s.scalars(select(Measurement.worker_id))) == {world.workers[1]}
    assert world.measurements() == 2


def test_concurrent_leases_never_share_a_candidate(world: World) -> None:
    cids = world.enqueue(120)
    barrier = threading.Barrier(len(world.workers))
    got: dict[int, list[int]] = {i: [] for i in range(len(world.workers))}
    errors: list[BaseException] = []

    def drain(i: int) -> None:
        try:
            barrier.wait()
            while True:
                lid, ids = world.lease(i, n=7)
                if lid is None:
                    return
                got[i].extend(ids)
                time.sleep(0.002)  # "measure" a little, as a worker would, so the others get turns
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(i,)) for i in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    everything = [c for ids in got.values() for c in ids]
    assert sorted(everything) == cids  # all leased, none twice
    assert sum(1 for ids in got.values() if ids) >= 2  # they really ran side by side


def test_release_makes_candidates_leasable_at_once(world: World) -> None:
    cids = world.enqueue(3)
    lid, _ = world.lease(0)
    assert lid is not None
    world.complete(0, lid, [ok(cids[0])])
    with session_scope(world.factory) as s:
        assert queue.release(s, lease_id=lid, worker_id=world.workers[0]) == 2
    assert world.lease(1)[1] == cids[1:]
    with session_scope(world.factory) as s, pytest.raises(LeaseLost):
        queue.heartbeat(s, lease_id=lid, worker_id=world.workers[0], ttl_s=TTL)


def test_heartbeat_extends_and_a_lost_lease_raises(world: World) -> None:
    world.enqueue(2)
    lid, _ = world.lease(0, n=1)
    assert lid is not None
    with session_scope(world.factory) as s:
        before = s.get(Lease, lid).expires_at  # type: ignore[union-attr]
        after = queue.heartbeat(s, lease_id=lid, worker_id=world.workers[0], ttl_s=3600)
    assert after.tzinfo is not None and after > as_utc(before) + timedelta(seconds=3000)
    with session_scope(world.factory) as s:
        assert as_utc(s.get(Lease, lid).expires_at) == after  # type: ignore[union-attr]
    with session_scope(world.factory) as s, pytest.raises(LeaseLost, match="belongs to worker"):
        queue.heartbeat(s, lease_id=lid, worker_id=world.workers[1], ttl_s=TTL)
    with session_scope(world.factory) as s, pytest.raises(NotFound):
        queue.heartbeat(s, lease_id=987654, worker_id=world.workers[0], ttl_s=TTL)
    world.expire(lid)
    with session_scope(world.factory) as s, pytest.raises(LeaseLost, match="expired"):
        queue.heartbeat(s, lease_id=lid, worker_id=world.workers[0], ttl_s=TTL)


def test_malformed_results_raise_and_store_nothing(world: World) -> None:
    cids = world.enqueue(2)
    lid, _ = world.lease(0)
    assert lid is not None
    bad_ones = [
        CandidateResult(candidate_id=cids[1]),
        CandidateResult(candidate_id=cids[1], run_secs=[]),
        CandidateResult(candidate_id=cids[1], run_secs=[1e-3, -1e-3]),
        CandidateResult(candidate_id=cids[1], run_secs=[float("nan")]),
    ]
    for bad in bad_ones:  # the good result before the bad one is not stored either
        with pytest.raises(BadInput, match=str(cids[1])):
            world.complete(0, lid, [ok(cids[0]), bad])
        assert world.measurements() == 0 and world.states(cids) == {"leased"}
    assert world.complete(0, lid, [ok(cids[0]), ok(cids[1])]).accepted == cids


def test_cancelled_candidates_leave_the_queue(world: World) -> None:
    cids = world.enqueue(4)
    lid, _ = world.lease(0, n=2)
    with session_scope(world.factory) as s:
        assert queue.cancel_candidates(s, task_ids=[world.task_id]) == 4
    assert world.states(cids) == {"cancelled"} and world.lease(1) == (None, [])
    assert world.complete(0, lid, [ok(cids[0])]).ignored == [cids[0]]  # type: ignore[arg-type]
    assert world.measurements() == 0


def test_error_kind_is_stored_and_read_back(world: World) -> None:
    from db.job_claims import job_candidates
    from db.models import Task

    cids = world.enqueue(3)
    lid, _ = world.lease(0)
    assert lid is not None
    world.complete(0, lid, [
        CandidateResult.model_validate(
            {"candidate_id": cids[0], **MeasurementOutcome.failed(ErrorKind.crash, "sandbox died").model_dump()}),
        CandidateResult(candidate_id=cids[1], error="older worker: no kind"),
        ok(cids[2]),
    ])
    with session_scope(world.factory) as s:
        kinds = dict(s.execute(select(Measurement.candidate_id, Measurement.error_kind)).all())
        assert kinds == {cids[0]: "crash", cids[1]: None, cids[2]: None}
        job_id = s.scalar(select(Task.job_id).where(Task.id == world.task_id))
        outcomes = {c.candidate_id: c.outcome for c in job_candidates(s, job_id=job_id, candidate_ids=cids)}
    assert outcomes[cids[0]] == MeasurementOutcome.failed(ErrorKind.crash, "sandbox died")
    assert outcomes[cids[1]].error_kind is None and outcomes[cids[1]].error == "older worker: no kind"
    assert outcomes[cids[2]].valid and outcomes[cids[2]].error_kind is None
