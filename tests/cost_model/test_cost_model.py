"""The cost model: pooled features, trained from every stored measurement, versioned in the database.

Real TVM: candidates come from MetaSchedule, are built and timed here, stored as
workers' reports are (``db.queue.complete``), then replayed and featurised.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cost_model import features
from db.engine import session_scope
from db.models import CostModelVersion
from db.queue import complete, enqueue_candidates, lease_candidates
from common.protocol import CandidateResult, JobStatus
from common.targets import canonical_target
from common.tvm_json import apply_trace, args_info_json
from factories import add_job, add_task, add_worker, add_workload
from tvm_helpers import CPU_TARGET, matmul_workload, real_candidates


@lru_cache(maxsize=8)
def measured(n: int, seed: int, count: int = 16) -> tuple[tuple[str, tuple[float, ...] | None], ...]:
    """(trace, run_secs) of ``count`` real candidates of an n³ matmul, measured once per session."""
    import tvm

    mod = matmul_workload(n)
    out = []
    for trace in real_candidates(n, count, seed):
        lib = tvm.tirx.build(apply_trace(mod, trace).mod, target=tvm.target.Target(CPU_TARGET))
        dev = tvm.cpu()
        args = [tvm.runtime.tensor(np.random.rand(*shape).astype(dtype), dev)
                for _, dtype, shape in json.loads(args_info_json(mod))]
        out.append((trace, tuple(lib.time_evaluator("main", dev, number=5, repeat=3)(*args).results)))
    return tuple(out)


def store_measurements(factory: sessionmaker[Session], n: int, seed: int) -> str:
    """A finished job with one task on the n³ matmul and its measurements; returns the target key."""
    target, key = canonical_target(CPU_TARGET)
    mod = matmul_workload(n)
    rows = measured(n, seed)
    with session_scope(factory) as s:
        workload = add_workload(s, mod=mod, flops=2.0 * n**3)
        worker = add_worker(s, target_key=key, target_json=json.dumps(target))
        job = add_job(s, target=CPU_TARGET, trials=len(rows), per_round=len(rows), status=JobStatus.done)
        task = add_task(s, job=job, workload=workload, name=f"matmul{n}")
        ids = enqueue_candidates(s, task_id=task.id, workload_id=workload.id, target_key=key,
                                 traces=[t for t, _ in rows], round=1)
        lease, _ = lease_candidates(s, worker_id=worker.id, target_key=key, max_count=len(rows), ttl_s=60)
        complete(s, lease_id=lease.id, worker_id=worker.id, results=[
            CandidateResult(candidate_id=cid, run_secs=list(secs) if secs else None, error=None if secs else "x")
            for cid, (_, secs) in zip(ids, rows)])
    return key


def test_pool_and_labels() -> None:
    rows = np.arange(2 * features.N_STORE_FEATURES, dtype=np.float32).reshape(2, -1)
    v = features.pool(rows)
    assert v.shape == (features.N_FEATURES,)
    assert np.allclose(v[: features.N_STORE_FEATURES], rows.sum(0))
    assert np.allclose(v[features.N_STORE_FEATURES: -1], rows.max(0))
    assert v[-1] == pytest.approx(np.log1p(2))
    assert not features.pool(np.zeros((0, features.N_STORE_FEATURES))).any()
    assert features.labels([2.0, None, 1.0, 4.0], 1.0).tolist() == [0.5, 0.0, 1.0, 0.25]
    assert not features.labels([1.0], None).any()


def test_trained_from_the_database_versioned_and_loaded_warm(session_factory: sessionmaker[Session],
                                                             tmp_path: Path) -> None:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from cost_model.model import booster_from_bytes
    from cost_model.store import load_cost_model, refresh
    from db.cost_models import latest

    target, _ = canonical_target(CPU_TARGET)
    key = store_measurements(session_factory, 32, 0)
    store_measurements(session_factory, 16, 0)

    first = refresh(session_factory, target_key=key, target=target, min_new=16)
    assert first is not None and first.version == 1 and first.meta["training"] == "full"
    assert first.n_samples == first.full_samples == 32
    assert first.blob[:1] == b"{" and not first.blob.startswith(b"\x80")  # UBJSON, not a pickle
    booster_from_bytes(first.blob)
    # Too little new data: no new version.
    assert refresh(session_factory, target_key=key, target=target, min_new=16).version == 1

    store_measurements(session_factory, 32, 1)  # 16 more: 50 % growth, under 2×: incremental
    second = refresh(session_factory, target_key=key, target=target, min_new=8)
    assert second.version == 2 and second.meta["training"] == "incremental"
    assert second.n_samples == 48 and second.full_samples == 32 and second.meta["new_samples"] == 16
    with session_scope(session_factory) as s:
        assert latest(s, target_key=key).version == 2
        assert len(s.scalars(select(CostModelVersion.id)).all()) == 2
        assert latest(s, target_key="other") is None

    # A new job's model starts from version 2 and ranks at once (no random warm-up).
    model = load_cost_model(session_factory, target_key=key, num_threads=1)
    assert model.base_version == 2
    mod = matmul_workload(32)
    ctx = ms.TuneContext(mod=mod, target=tvm.target.Target(target), num_threads=1)
    info = list(ms.arg_info.ArgInfo.from_entry_func(mod, remove_preproc=True))
    rows = measured(32, 0)
    cands = [ms.MeasureCandidate(apply_trace(mod, t), info) for t, _ in rows]
    before = model.predict(ctx, cands)
    assert before.shape == (16,) and np.isfinite(before).all() and np.ptp(before) > 0
    # Trained on these very measurements, it ranks them better than chance.
    secs = np.array([np.mean(s) for _, s in rows])
    from cost_model.evaluate import pairwise_accuracy

    assert pairwise_accuracy(before, secs) > 0.6

    # Online: the job's own results add trees on top of the base, which stays as stored.
    results = [ms.runner.RunnerResult(run_secs=list(s), error_msg=None) for _, s in rows[:8]]
    model.update(ctx, cands[:8], results)
    assert model.booster is not model.base and model.n_samples == 8
    assert np.allclose(booster_from_bytes(second.blob).predict(__import__("xgboost").DMatrix(
        features.extract(ctx, cands))), model.base.predict(__import__("xgboost").DMatrix(features.extract(ctx, cands))))
    path = str(tmp_path / "model.json")
    model.save(path)
    again = load_cost_model(session_factory, target_key="none-yet", num_threads=1)
    assert again.base_version is None
    again.load(path)
    assert np.allclose(again.predict(ctx, cands), model.predict(ctx, cands))


def test_flagged_measurements_are_not_trained_on(session_factory: sessionmaker[Session]) -> None:
    """Timings a worker flagged (degraded, or its CPUs shared) are left out of the training set."""
    from sqlalchemy import update

    from cost_model.store import load_samples
    from db.models import Measurement

    target, _ = canonical_target(CPU_TARGET)
    key = store_measurements(session_factory, 16, 0)
    before = load_samples(session_factory, target_key=key, target=target)
    with session_scope(session_factory) as s:
        flagged = s.scalars(select(Measurement.id).where(Measurement.target_key == key)
                            .order_by(Measurement.id).limit(5)).all()
        s.execute(update(Measurement).where(Measurement.id.in_(flagged)).values(flagged=True))
    after = load_samples(session_factory, target_key=key, target=target)
    assert len(before) == 16 and len(after) == 11
    assert not set(flagged) & set(after.measurement_ids.tolist())


def test_cold_model_is_random_until_warm(session_factory: sessionmaker[Session]) -> None:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from cost_model.model import XGBCostModel

    target, _ = canonical_target(CPU_TARGET)
    mod = matmul_workload(32)
    ctx = ms.TuneContext(mod=mod, target=tvm.target.Target(target), num_threads=1)
    info = list(ms.arg_info.ArgInfo.from_entry_func(mod, remove_preproc=True))
    rows = measured(32, 0)
    cands = [ms.MeasureCandidate(apply_trace(mod, t), info) for t, _ in rows]
    model = XGBCostModel(num_threads=1, warmup_samples=12, seed=0)
    results = [ms.runner.RunnerResult(run_secs=list(s), error_msg=None) for _, s in rows]
    model.update(ctx, cands[:8], results[:8])
    assert model.booster is None  # under warm-up: random scores
    model.update(ctx, cands[8:], results[8:])
    assert model.booster is not None and model.predict(ctx, cands).shape == (16,)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_evaluate_ranks_held_out_beside_metaschedule(db_url: str, session_factory: sessionmaker[Session]) -> None:
    from typer.testing import CliRunner

    from common.errors import NotFound
    from cost_model.evaluate import evaluate, markdown
    from tunehub.cli import app

    with pytest.raises(NotFound, match="no measurements"):
        evaluate(session_factory)
    key = store_measurements(session_factory, 32, 0)
    store_measurements(session_factory, 32, 1)
    store_measurements(session_factory, 16, 0)
    scores = evaluate(session_factory, target_key=key)
    assert scores.target_key == key and [m.model for m in scores.models] == ["tunehub", "metaschedule"]
    for m in scores.models:
        assert 0 <= m.pairwise_accuracy <= 1 and m.workloads == 2 and m.test_samples >= 4
    assert "| tunehub |" in markdown(scores) and "top-5 recall" in markdown(scores)
    # The CLI calls it directly; the key with most measurements by default.
    result = CliRunner().invoke(app, ["cost-model", "eval", "--database-url", db_url, "--json", "-k", "3"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["target_key"] == key and out["k"] == 3 and {m["model"] for m in out["models"]} == {"tunehub", "metaschedule"}
