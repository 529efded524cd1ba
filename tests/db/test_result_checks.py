"""Results are checked before they count, on SQLite and PostgreSQL.

Malformed times (NaN, inf, negative, zero, none) are a 422 for the whole
report and store nothing; believable-looking but impossible times (TVM's 1e10
stub, faster than the workload's FLOPs at the target's peak, an unchecked
output) are stored as errors of kind ``rejected`` and are never served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select
from factories import SCHEDULE_TRACE
from sqlalchemy.orm import Session, sessionmaker

from common.errors import BadInput
from common.protocol import CandidateResult, ErrorKind
from db import jobs, queue, ranking, uploads, workers, workloads
from db.engine import session_scope
from db.models import Candidate, Measurement
from db.plausibility import PeakPolicy, peak_flops

KEY = '{"keys":["cpu"],"kind":"llvm","num-cores":2}'
FLOPS = 2.0 * 256**3  # a 256^3 matmul: 33.5 MFLOP
PEAK = peak_flops({"kind": "llvm", "num-cores": 2}, KEY, PeakPolicy(per_core_gflops=1000.0))  # 2 TFLOP/s


@dataclass(frozen=True)
class _Wl:
    shash: str
    mod_json: str = "{}"
    args_info_json: str = "[]"
    flops: float | None = FLOPS


def _leased(factory: sessionmaker[Session], n: int) -> tuple[int, int, int, list[int]]:
    """(workload id, worker id, lease id, candidate ids) with ``n`` candidates leased to one worker."""
    with session_scope(factory) as s:
        model, _ = uploads.store_model(s, name="m", content=b"onnx-checks", input_shapes={})
        wid = workloads.upsert_workloads(s, extracted=[_Wl("4242")])["4242"]
        job = jobs.create_job(s, model_id=model.id, target_json={"kind": "llvm"}, target_key=KEY, trials=n,
                              trials_per_round=n, tasks=[("t", 1, wid)])
        task_id = jobs.job_public(s, job_id=job).tasks[0].id
        worker = workers.register_worker(s, name="w", token_id=None, hardware={}, target_json={"kind": "llvm"},
                                         target_key=KEY).id
        cids = queue.enqueue_candidates(s, task_id=task_id, workload_id=wid, target_key=KEY,
                                        traces=[SCHEDULE_TRACE] * n, round=0)
        lease, _ = queue.lease_candidates(s, worker_id=worker, target_key=KEY, max_count=n, ttl_s=60)
        assert lease is not None
        return wid, worker, lease.id, cids


@pytest.mark.parametrize("secs", [[math.nan], [math.inf], [-1e-3], [0.0], [1e-3, -math.inf], []])
def test_malformed_times_are_refused_and_nothing_is_stored(session_factory: sessionmaker[Session], secs) -> None:
    _, worker, lease, (good, bad) = _leased(session_factory, 2)
    with pytest.raises(BadInput), session_scope(session_factory) as s:
        queue.complete(s, lease_id=lease, worker_id=worker, peak_flops=PEAK, results=[
            CandidateResult(candidate_id=good, run_secs=[1e-3]),
            CandidateResult(candidate_id=bad, run_secs=secs),
        ])
    with session_scope(session_factory) as s:
        assert s.execute(select(func.count()).select_from(Measurement)).scalar_one() == 0
        assert {c.state for c in s.scalars(select(Candidate))} == {"leased"}


def test_implausible_times_are_stored_as_rejected_and_never_served(session_factory: sessionmaker[Session]) -> None:
    wid, worker, lease, (stub, fast, unchecked, tiny, honest) = _leased(session_factory, 5)
    floor = FLOPS / PEAK  # 16.8 us
    with session_scope(session_factory) as s:
        ack = queue.complete(s, lease_id=lease, worker_id=worker, peak_flops=PEAK, results=[
            CandidateResult(candidate_id=stub, run_secs=[1e10, 1e10]),
            CandidateResult(candidate_id=fast, run_secs=[floor / 2, floor * 3]),  # one repeat beats the peak
            CandidateResult(candidate_id=unchecked, run_secs=[1e-3], output_checked=False),
            CandidateResult(candidate_id=tiny, run_secs=[1e-300]),
            CandidateResult(candidate_id=honest, run_secs=[floor * 40]),
        ])
    assert sorted(ack.accepted) == sorted([stub, fast, unchecked, tiny, honest])
    with session_scope(session_factory) as s:
        rows = {m.candidate_id: m for m in s.scalars(select(Measurement))}
        for cid, why in ((stub, "stub"), (fast, "peak"), (unchecked, "not checked"), (tiny, "peak")):
            assert rows[cid].error_kind == ErrorKind.rejected.value and why in rows[cid].error, rows[cid].error
            assert rows[cid].mean_secs is None and rows[cid].run_secs_json is None
        assert rows[honest].error is None and rows[honest].mean_secs == pytest.approx(floor * 40)
        best = ranking.best_records(s, target_key=KEY, workload_ids=[wid])
        assert [b.candidate_id for b in best] == [honest]


def test_peak_by_target() -> None:
    policy = PeakPolicy(per_core_gflops=100.0, overrides={"vulkan": 5.0})
    assert peak_flops({"kind": "llvm", "num-cores": 4}, "k", policy) == 400e9
    assert peak_flops({"kind": "llvm"}, "k", policy) == 512 * 100e9  # cores unknown: generous
    assert peak_flops({"kind": "cuda", "arch": "sm_80"}, "k", policy) < peak_flops({"kind": "cuda", "arch": "sm_90"}, "k", policy)
    assert peak_flops({"kind": "vulkan"}, "k", policy) == 5e9  # by kind
    assert peak_flops({"kind": "llvm", "num-cores": 4}, "k", PeakPolicy(overrides={"k": 7.0})) == 7e9  # by key
