"""Tokens, uploads, workloads, jobs, workers and best records on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import jobs, queue, ranking, tokens, uploads, workers, workloads
from db.engine import session_scope
from db.models import Token, Workload
from common.errors import BadInput, Conflict, NotFound
from common.protocol import CandidateResult, JobStatus, Role

KEY = '{"kind":"llvm"}'
OTHER_KEY = '{"kind":"llvm","num-cores":4}'


@dataclass(frozen=True)
class Wl:
    shash: str
    mod_json: str = "{}"
    args_info_json: str = "[]"
    flops: float | None = 1.0


def test_tokens(session_factory: sessionmaker[Session]) -> None:
    assert tokens.hash_token("abc") == hashlib.sha256(b"abc").hexdigest()
    with session_scope(session_factory) as s:
        made, raw = tokens.create_token(s, name="alice", role=Role.user)
        tid = made.id
        assert (made.name, made.role) == ("alice", Role.user)
        stored = s.scalars(select(Token.token_hash).where(Token.id == tid)).one()
        assert stored == tokens.hash_token(raw) and raw not in stored
        admin = tokens.ensure_token(s, raw="fixed-admin-token", name="admin", role=Role.admin)
        assert tokens.ensure_token(s, raw="fixed-admin-token", name="admin", role=Role.admin).id == admin.id
    with session_scope(session_factory) as s:
        assert tokens.verify_token(s, raw=raw) == (tid, Role.user)
        assert tokens.verify_token(s, raw="fixed-admin-token") == (admin.id, Role.admin)
        assert tokens.verify_token(s, raw="nope") is None
        tokens.revoke_token(s, token_id=tid)
        tokens.revoke_token(s, token_id=tid)  # twice is fine
        with pytest.raises(NotFound):
            tokens.revoke_token(s, token_id=987654)
    with session_scope(session_factory) as s:
        assert tokens.verify_token(s, raw=raw) is None
        assert len(s.scalars(select(Token)).all()) == 2


def test_models_dedup_by_sha256(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        m, created = uploads.store_model(s, name="a.onnx", content=b"bytes-1", input_shapes={"x": [1, 2]})
        assert created and m.sha256 == hashlib.sha256(b"bytes-1").hexdigest() and m.size_bytes == 7
        again, created = uploads.store_model(s, name="b.onnx", content=b"bytes-1", input_shapes={"x": [1, 2]})
        assert not created and again.id == m.id and again.name == "a.onnx"
        with pytest.raises(Conflict, match=rf"model {m.id}"):
            uploads.store_model(s, name="c.onnx", content=b"bytes-1", input_shapes={"x": [3, 2]})
        with pytest.raises(BadInput):
            uploads.store_model(s, name="e.onnx", content=b"", input_shapes={})
        uploads.store_model(s, name="d.onnx", content=b"bytes-2", input_shapes={})
    with session_scope(session_factory) as s:
        listed = uploads.list_models(s)
        assert [x.name for x in listed] == ["d.onnx", "a.onnx"] and listed[1].input_shapes == {"x": [1, 2]}
        assert uploads.model_file(s, model_id=m.id).content == b"bytes-1"
        assert uploads.get_model(s, model_id=m.id).created_at.tzinfo is not None  # aware UTC on the wire
        with pytest.raises(NotFound, match="model 987654"):
            uploads.get_model(s, model_id=987654)
        with pytest.raises(NotFound, match="model 987654"):
            uploads.model_file(s, model_id=987654)


def test_upsert_workloads_is_idempotent_and_race_safe(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        first = workloads.upsert_workloads(s, extracted=[Wl("1"), Wl("2"), Wl("1")])
        assert set(first) == {"1", "2"}
    results: list[dict[str, int]] = []
    barrier = threading.Barrier(3)

    def upsert() -> None:
        with session_scope(session_factory) as s:
            barrier.wait()
            results.append(workloads.upsert_workloads(s, extracted=[Wl("2"), Wl("3", mod_json="other")]))

    threads = [threading.Thread(target=upsert) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 3 and all(r == results[0] for r in results) and results[0]["2"] == first["2"]
    with session_scope(session_factory) as s:
        assert sorted(s.scalars(select(Workload.shash))) == ["1", "2", "3"]


def _job(s: Session, model_id: int, key: str, wids: list[int]) -> int:
    return jobs.create_job(
        s, model_id=model_id, target_json={"kind": "llvm"}, target_key=key, trials=10, trials_per_round=2,
        tasks=[(f"t{w}", 1, w) for w in wids],
    )


def _measure(s: Session, worker_id: int, task_id: int, workload_id: int, key: str, secs: list[float | None]) -> list[int]:
    """Candidates for a task, leased and completed: a None in ``secs`` is an error."""
    cids = queue.enqueue_candidates(s, task_id=task_id, workload_id=workload_id, target_key=key,
                                    traces=[f'[["c{i}"],[]]' for i in range(len(secs))], round=0)
    lease, _ = queue.lease_candidates(s, worker_id=worker_id, target_key=key, max_count=len(secs), ttl_s=60)
    assert lease is not None
    results = [CandidateResult(candidate_id=c, run_secs=[x]) if x else CandidateResult(candidate_id=c, error="boom")
               for c, x in zip(cids, secs, strict=True)]
    queue.complete(s, lease_id=lease.id, worker_id=worker_id, results=results)
    return cids


def test_jobs_progress_list_and_cancel(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        model, _ = uploads.store_model(s, name="m", content=b"m", input_shapes={})
        ids = workloads.upsert_workloads(s, extracted=[Wl("a", flops=10.0), Wl("b")])
        worker = workers.register_worker(s, name="w", token_id=None, hardware={}, target_json="{}", target_key=KEY)
        # two fused ops that hash the same become one task, weights summed
        job = jobs.create_job(s, model_id=model.id, target_json={"kind": "llvm"}, target_key=KEY, trials=10,
                                 trials_per_round=2, tasks=[("fa", 1, ids["a"]), ("fb", 2, ids["b"]), ("fa2", 3, ids["a"])])
        with pytest.raises(BadInput):
            _job(s, model.id, KEY, [])
        pub = jobs.job_public(s, job_id=job)
        assert [(t.name, t.weight, t.workload_hash) for t in pub.tasks] == [("fa", 4, "a"), ("fb", 2, "b")]
        assert pub.status is JobStatus.queued and pub.trials_done == 0 and pub.target == {"kind": "llvm"}
        ta, tb = pub.tasks
        _measure(s, worker.id, ta.id, ids["a"], KEY, [3e-3, None, 1e-3])
        _measure(s, worker.id, tb.id, ids["b"], KEY, [None])
        second = _job(s, model.id, KEY, [ids["b"]])
    with session_scope(session_factory) as s:
        pub = jobs.job_public(s, job_id=job)
        assert pub.trials_done == 4
        assert [(t.trials_done, t.trials_valid, t.best_latency_s, t.flops) for t in pub.tasks] == [
            (3, 2, pytest.approx(1e-3), 10.0),
            (1, 0, None, 1.0),
        ]
        listed = jobs.list_jobs(s)
        assert [j.id for j in listed] == [second, job] and listed[1] == pub
        assert listed[0].trials_done == 0  # progress is per job: its own candidates only
        assert [j.id for j in jobs.list_jobs(s, status=JobStatus.queued, model_id=model.id, limit=1)] == [second]
        assert jobs.list_jobs(s, status=JobStatus.done) == []
        with pytest.raises(NotFound):
            jobs.job_public(s, job_id=987654)
    with session_scope(session_factory) as s:
        assert jobs.cancel_job(s, job_id=second).status is JobStatus.cancelled
        with pytest.raises(Conflict, match="cancelled"):
            jobs.cancel_job(s, job_id=second)
        with pytest.raises(NotFound):
            jobs.cancel_job(s, job_id=987654)


def test_register_worker_again_keeps_its_id(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        tok, _ = tokens.create_token(s, name="w", role=Role.worker)
        def register(hardware: dict[str, int], key: str):  # type: ignore[no-untyped-def]
            return workers.register_worker(
                s, name="box", token_id=tok.id, hardware=hardware, target_json={"kind": "llvm"}, target_key=key
            )

        a, b, c = register({"cores": 2}, KEY), register({"cores": 4}, KEY), register({}, OTHER_KEY)
        assert a.id == b.id != c.id and b.hardware == {"cores": 4}
        assert [w.id for w in workers.list_workers(s)] == [a.id, c.id]
        assert [w.id for w in workers.list_workers(s, target_key=OTHER_KEY)] == [c.id]
        assert workers.get_worker(s, worker_id=a.id).name == "box"
        with pytest.raises(NotFound):
            workers.get_worker(s, worker_id=987654)


def test_best_records_span_jobs_skip_errors_and_break_ties_by_candidate(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        model, _ = uploads.store_model(s, name="m", content=b"m", input_shapes={})
        ids = workloads.upsert_workloads(s, extracted=[Wl("a"), Wl("b"), Wl("c")])
        w = workers.register_worker(s, name="w", token_id=None, hardware={}, target_json="{}", target_key=KEY)
        w2 = workers.register_worker(s, name="w2", token_id=None, hardware={}, target_json="{}", target_key=OTHER_KEY)
        old_job = _job(s, model.id, KEY, [ids["a"], ids["b"]])
        old = jobs.job_public(s, job_id=old_job).tasks
        new = jobs.job_public(s, job_id=_job(s, model.id, KEY, [ids["a"], ids["c"]])).tasks
        other = jobs.job_public(s, job_id=_job(s, model.id, OTHER_KEY, [ids["a"]])).tasks
        a_old = _measure(s, w.id, old[0].id, ids["a"], KEY, [2e-3, 1e-3])  # the best of "a" is in the old job
        _measure(s, w.id, new[0].id, ids["a"], KEY, [5e-3, None])
        b = _measure(s, w.id, old[1].id, ids["b"], KEY, [None, 4e-3, 4e-3])  # a tie: the lower id wins
        _measure(s, w.id, new[1].id, ids["c"], KEY, [None])  # "c": only an error
        _measure(s, w2.id, other[0].id, ids["a"], OTHER_KEY, [1e-6])  # faster, but another target key
    with session_scope(session_factory) as s:
        recs = ranking.best_records(s, target_key=KEY, workload_ids=[ids["a"], ids["c"], ids["b"], ids["a"]])
        assert [(r.shash, r.candidate_id, r.mean_secs) for r in recs] == [
            ("a", a_old[1], pytest.approx(1e-3)),
            ("b", b[1], pytest.approx(4e-3)),
        ]
        assert recs[0].trace_json == '[["c1"],[]]' and recs[0].run_secs == [1e-3] and recs[0].mod_json == "{}"
        assert ranking.best_records(s, target_key=KEY, workload_ids=[]) == []
        assert [r.mean_secs for r in ranking.best_records(s, target_key=OTHER_KEY, workload_ids=[ids["a"]])] == [1e-6]
        assert sorted(jobs.model_workloads(s, model_id=model.id, target_key=KEY)) == sorted(ids.values())
        assert jobs.model_workloads(s, model_id=model.id, target_key="none") == []
        target, key, wids = jobs.job_workloads(s, job_id=old_job)
        assert key == KEY and wids == [ids["a"], ids["b"]] and target == {"kind": "llvm"}
