"""Winners are re-measured on a second worker before they are served, on SQLite and PostgreSQL.

Two workers serve one target key. A result that would become its workload's
best is stored ``pending`` and re-queued for the other worker only; the
verdict (agree, slower, faster, failed) decides what is served and who is
suspect. With one worker nothing is asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import select
from factories import SCHEDULE_TRACE
from sqlalchemy.orm import Session, sessionmaker

from common.protocol import CandidateResult, ErrorKind
from db import jobs, queue, ranking, uploads, workers, workloads
from db.confirmation import Confirmation, ConfirmPolicy
from db.engine import session_scope
from db.models import Candidate, Measurement, Worker

KEY = '{"keys":["cpu"],"kind":"llvm","num-cores":2}'
POLICY = ConfirmPolicy(enabled=True, tolerance=1.5, peer_seen_s=600.0)


@dataclass(frozen=True)
class _Wl:
    shash: str
    mod_json: str = "{}"
    args_info_json: str = "[]"
    flops: float | None = None


@dataclass
class _Fleet:
    factory: sessionmaker[Session]
    workload: int
    task: int
    workers: list[int]

    def enqueue(self, n: int) -> list[int]:
        with session_scope(self.factory) as s:
            return queue.enqueue_candidates(s, task_id=self.task, workload_id=self.workload, target_key=KEY,
                                            traces=[SCHEDULE_TRACE.replace("b0", f"b{i}") for i in range(n)], round=0)

    def measure(self, worker: int, secs: dict[int, float | str], n: int = 64) -> list[int]:
        """Lease for ``worker`` and report ``secs[candidate]`` (a time, or an error kind); returns the leased ids."""
        with session_scope(self.factory) as s:
            lease, cands = queue.lease_candidates(s, worker_id=worker, target_key=KEY, max_count=n, ttl_s=60)
            if lease is None:
                return []
            results = []
            for c in cands:
                value = secs.get(c.id, secs.get(-1))  # -1: the time for any other candidate
                if isinstance(value, str):
                    results.append(CandidateResult(candidate_id=c.id, error="x", error_kind=ErrorKind(value)))
                else:
                    results.append(CandidateResult(candidate_id=c.id, run_secs=[value]))
            queue.complete(s, lease_id=lease.id, worker_id=worker, results=results, confirm=POLICY)
            return [c.id for c in cands]

    def state(self, cid: int) -> str | None:
        with session_scope(self.factory) as s:
            return s.scalar(select(Measurement.confirmation).where(Measurement.candidate_id == cid))

    def confirmations(self) -> list[tuple[int, int]]:
        """(candidate id, excluded worker) of queued confirmation candidates."""
        with session_scope(self.factory) as s:
            rows = s.execute(select(Candidate.id, Candidate.exclude_worker_id)
                             .where(Candidate.confirms_measurement_id.is_not(None)).order_by(Candidate.id))
            return [tuple(r) for r in rows]

    def suspect(self, worker: int) -> str | None:
        with session_scope(self.factory) as s:
            return s.get(Worker, worker).suspect_reason

    def best(self) -> tuple[int, bool] | None:
        with session_scope(self.factory) as s:
            found = ranking.best_records(s, target_key=KEY, workload_ids=[self.workload])
            return (found[0].candidate_id, found[0].confirmed) if found else None


def _fleet(factory: sessionmaker[Session], n_workers: int) -> _Fleet:
    with session_scope(factory) as s:
        model, _ = uploads.store_model(s, name="m", content=b"onnx-confirm", input_shapes={})
        wid = workloads.upsert_workloads(s, extracted=[_Wl("5151")])["5151"]
        job = jobs.create_job(s, model_id=model.id, target_json={"kind": "llvm"}, target_key=KEY, trials=8,
                              trials_per_round=8, tasks=[("t", 1, wid)])
        task = jobs.job_public(s, job_id=job).tasks[0].id
        ids = [workers.register_worker(s, name=f"w{i}", token_id=None, hardware={}, target_json={"kind": "llvm"},
                                       target_key=KEY).id for i in range(n_workers)]
    return _Fleet(factory, wid, task, ids)


def test_agreeing_confirmation_confirms(session_factory: sessionmaker[Session]) -> None:
    fleet = _fleet(session_factory, 2)
    a, b = fleet.workers
    (cid,) = fleet.enqueue(1)
    fleet.measure(a, {cid: 1.0e-3})
    assert fleet.state(cid) == Confirmation.pending.value
    [(confirm, excluded)] = fleet.confirmations()
    assert excluded == a
    assert fleet.measure(a, {}) == []  # the reporting worker never confirms itself
    assert fleet.best() == (cid, False)  # served unconfirmed while nothing else is known
    assert fleet.measure(b, {confirm: 1.2e-3}) == [confirm]
    assert fleet.state(cid) == Confirmation.confirmed.value
    assert fleet.best() == (cid, True)
    assert fleet.suspect(a) is None and fleet.suspect(b) is None
    with session_scope(session_factory) as s:  # the re-measurement is not a trial of the job
        assert sum(t.trials_done for t in jobs.job_public(s, job_id=1).tasks) == 1


def test_fast_claim_not_reproduced_is_rejected_and_its_worker_suspect(session_factory) -> None:
    fleet = _fleet(session_factory, 2)
    a, b = fleet.workers
    (honest,) = fleet.enqueue(1)
    fleet.measure(b, {honest: 2.0e-3})
    [(c1, _)] = fleet.confirmations()
    fleet.measure(a, {c1: 2.1e-3})  # a confirms b's honest result
    assert fleet.best() == (honest, True)
    (fake,) = fleet.enqueue(1)
    fleet.measure(a, {fake: 0.5e-3})  # a claims 4x faster
    assert fleet.state(fake) == Confirmation.pending.value
    assert fleet.best() == (honest, True)  # pending: not promoted
    [_, (c2, excluded)] = fleet.confirmations()
    assert excluded == a
    fleet.measure(b, {c2: 2.0e-3})
    assert fleet.state(fake) == Confirmation.rejected.value
    assert fleet.best() == (honest, True)
    assert "slower" in (fleet.suspect(a) or "") and fleet.suspect(b) is None
    # A suspect worker confirms nothing and its later results are not sent for confirmation by it.
    (later,) = fleet.enqueue(1)
    fleet.measure(b, {later: 1.5e-3})
    assert fleet.measure(a, {}) == []


def test_confirmer_faster_than_original_is_the_suspect(session_factory) -> None:
    fleet = _fleet(session_factory, 2)
    a, b = fleet.workers
    (cid,) = fleet.enqueue(1)
    fleet.measure(a, {cid: 3.0e-3})
    [(confirm, _)] = fleet.confirmations()
    fleet.measure(b, {confirm: 0.5e-3})
    assert fleet.state(cid) is None  # unconfirmed, not refuted
    assert fleet.best() == (cid, False)
    assert fleet.suspect(a) is None and "faster" in (fleet.suspect(b) or "")


@pytest.mark.parametrize("kind, accused", [(ErrorKind.wrong_output, True), (ErrorKind.timeout, False)])
def test_failed_confirmation_rejects(session_factory, kind: ErrorKind, accused: bool) -> None:
    fleet = _fleet(session_factory, 2)
    a, b = fleet.workers
    (cid,) = fleet.enqueue(1)
    fleet.measure(a, {cid: 1.0e-3})
    [(confirm, _)] = fleet.confirmations()
    fleet.measure(b, {confirm: kind.value})
    assert fleet.state(cid) == Confirmation.rejected.value
    assert fleet.best() is None
    assert (fleet.suspect(a) is not None) is accused


def test_single_worker_and_slower_results_ask_nothing(session_factory) -> None:
    fleet = _fleet(session_factory, 1)
    (a,) = fleet.workers
    first, second = fleet.enqueue(2)
    fleet.measure(a, {first: 1.0e-3, second: 0.9e-3})
    assert fleet.confirmations() == [] and fleet.state(second) is None
    assert fleet.best() == (second, False)
    fleet2 = _fleet(session_factory, 0)
    with session_scope(session_factory) as s:  # a second worker arrives: only a new best is re-measured
        b = workers.register_worker(s, name="late", token_id=None, hardware={}, target_json={"kind": "llvm"},
                                    target_key=KEY).id
    slower, faster = fleet.enqueue(2)
    fleet.measure(a, {slower: 2.0e-3, faster: 0.5e-3})
    assert fleet.state(slower) is None and fleet.state(faster) == Confirmation.pending.value
    assert [e for _, e in fleet.confirmations()] == [a]
    assert fleet2.workers == [] and b != a
