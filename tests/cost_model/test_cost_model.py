"""The cost model: pooled features, trained from every stored measurement, versioned in the database.

Real TVM: candidates come from MetaSchedule, are built and timed here, stored as
workers' reports are (``db.queue.complete``), then replayed and featurised.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from factories import add_job, add_task, add_workload
from measured_records import measured, store_measurements
from tvm_helpers import CPU_TARGET, matmul_workload

from common.protocol import JobStatus
from common.targets import canonical_target
from common.tvm_json import apply_trace, workload_hash
from cost_model import features
from db.engine import session_scope
from db.models import CostModelVersion, Model, Workload


def test_features_see_schedule_and_workload_and_labels_are_ranks() -> None:
    rows = np.arange(2 * features.N_STORE_FEATURES, dtype=np.float32).reshape(2, -1)
    v = features.pool(rows)
    assert v.shape == (features.N_SCHEDULE_FEATURES,)
    assert np.allclose(v[: features.N_STORE_FEATURES], rows.sum(0))
    assert np.allclose(v[features.N_STORE_FEATURES: -1], rows.max(0))
    assert v[-1] == pytest.approx(np.log1p(2))
    assert not features.pool(np.zeros((0, features.N_STORE_FEATURES))).any()

    small, big = features.workload_features(matmul_workload(16)), features.workload_features(matmul_workload(32))
    at = features.FAMILY_BUCKETS
    assert small[:at].sum() == 1 and np.array_equal(small[:at], big[:at]), "one family, whatever the shape"
    assert big[at] - small[at] == pytest.approx(np.log1p(2 * 32**3) - np.log1p(2 * 16**3), rel=1e-4)  # log FLOPs
    assert big[at + 1] > small[at + 1] and big[at + 2] > small[at + 2]  # bytes; intensity grows with n
    assert big[at + 3] == pytest.approx(np.log1p(32 * 32)) and big[at + 4] == pytest.approx(np.log1p(32))
    assert list(big[at + 5: at + 7]) == [2, 1]  # spatial, reduction iterators of the anchor block

    # Ranks within the workload: the fastest 1, ties share, the slowest valid above every error.
    assert features.rank_labels([2.0, None, 1.0, 4.0, 2.0]).tolist() == [0.625, 0.0, 1.0, 0.25, 0.625]
    assert features.rank_labels([1e-6, 1.0]).tolist() == features.rank_labels([1.0, 1e6]).tolist() == [1.0, 0.5]
    assert not features.rank_labels([None, None]).any()


def _candidates(n: int, seed: int) -> tuple[object, list[object], np.ndarray]:
    """(TuneContext, MeasureCandidates, mean seconds) of the measured n³ matmul candidates."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    target, _ = canonical_target(CPU_TARGET)
    mod = matmul_workload(n)
    ctx = ms.TuneContext(mod=mod, target=tvm.target.Target(target), num_threads=1)
    info = list(ms.arg_info.ArgInfo.from_entry_func(mod, remove_preproc=True))
    rows = measured(n, seed)
    return ctx, [ms.MeasureCandidate(apply_trace(mod, t), info) for t, _ in rows], np.array([np.mean(s) for _, s in rows])


def _results(secs: np.ndarray) -> list[object]:
    from tvm.s_tir import meta_schedule as ms

    return [ms.runner.RunnerResult(run_secs=[float(t)], error_msg=None) for t in secs]


def test_trained_from_the_database_versioned_and_loaded_warm(session_factory: sessionmaker[Session],
                                                             tmp_path: Path) -> None:
    from cost_model import ensemble
    from cost_model.evaluate import pairwise_accuracy
    from cost_model.store import load_cost_model, load_samples, refresh
    from db.cost_models import latest

    target, _ = canonical_target(CPU_TARGET)
    key = store_measurements(session_factory, 32, 0)
    store_measurements(session_factory, 16, 0)

    # Labels are ranks within each workload: each workload's fastest is 1.
    samples = load_samples(session_factory, target_key=key, target=target)
    for wid in set(samples.workload_ids.tolist()):
        y, secs = samples.y[samples.workload_ids == wid], np.array(samples.mean_secs)[samples.workload_ids == wid]
        assert y.max() == 1.0 and y[np.argmin(secs)] == 1.0 and y[np.argmax(secs)] == pytest.approx(1 / 16)
    assert samples.x.shape == (32, features.N_FEATURES)

    first = refresh(session_factory, target_key=key, target=target, min_new=16)
    assert first is not None and first.version == 1 and first.meta["training"] == "full"
    assert first.meta["layout"] == features.LAYOUT and first.meta["members"] == ensemble.ENSEMBLE_SIZE
    assert first.n_samples == first.full_samples == 32
    assert not first.blob.startswith(b"\x80")  # never a pickle
    assert len(ensemble.from_bytes(first.blob)) == ensemble.ENSEMBLE_SIZE
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

    # A new job's model starts from version 2; trained on these very measurements, it ranks them well.
    model = load_cost_model(session_factory, target_key=key, num_threads=1)
    assert model.base_version == 2 and len(model.members) == ensemble.ENSEMBLE_SIZE
    ctx, cands, secs = _candidates(32, 0)
    fleet = ensemble.predict(model.members, features.extract(ctx, cands))
    assert pairwise_accuracy(fleet.score, secs) > 0.6
    before = model.predict(ctx, cands)
    assert before.shape == (16,) and np.isfinite(before).all() and np.ptp(before) > 0

    # Online: the job's own results add trees on top of each member; the stored members stay as stored.
    stored_scores = [m.predict(__import__("xgboost").DMatrix(features.extract(ctx, cands))) for m in model.base]
    model.update(ctx, cands[:8], _results(secs[:8]))
    assert model.n_samples == 8 and all(a is not b for a, b in zip(model.members, model.base))
    assert model.fallback.data_size == 8, "MetaSchedule's model inside learns the job's results too"
    for m, kept in zip(ensemble.from_bytes(second.blob), stored_scores):
        assert np.allclose(m.predict(__import__("xgboost").DMatrix(features.extract(ctx, cands))), kept)
    path = str(tmp_path / "model.bin")
    model.save(path)
    again = load_cost_model(session_factory, target_key="none-yet", num_threads=1)
    assert again.base_version is None and again.members == []
    again.load(path)
    assert np.allclose(ensemble.predict(again.members, features.extract(ctx, cands)).score,
                       ensemble.predict(model.members, features.extract(ctx, cands)).score)


def test_a_model_of_another_feature_layout_is_retrained_not_loaded(session_factory: sessionmaker[Session]) -> None:
    from cost_model.store import load_cost_model, refresh
    from db.cost_models import save

    target, _ = canonical_target(CPU_TARGET)
    key = store_measurements(session_factory, 16, 0)
    with session_scope(session_factory) as s:
        save(s, target_key=key, blob=b"{}", n_samples=16, full_samples=16, max_measurement_id=10**9,
             meta={"features": "per-store sum+max+log1p(n)", "n_features": 329})
    assert load_cost_model(session_factory, target_key=key).members == []
    fresh = refresh(session_factory, target_key=key, target=target, min_new=8)
    assert fresh.version == 2 and fresh.meta["training"] == "full" and fresh.meta["layout"] == features.LAYOUT


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


def test_unsure_ensemble_falls_back_to_metaschedules_model() -> None:
    """No ensemble, or members that rank the batch differently: MetaSchedule's model (trained online) ranks."""
    from cost_model import ensemble
    from cost_model.evaluate import metaschedule_model
    from cost_model.model import UNCERTAINTY_THRESHOLD, XGBCostModel

    ctx, cands, secs = _candidates(32, 0)
    x = features.extract(ctx, cands)
    y = features.rank_labels(list(secs))
    group = np.zeros(len(y), dtype=np.int64)

    def fallback():  # type: ignore[no-untyped-def]
        fb = metaschedule_model(1)  # no warm-up: deterministic once trained
        fb.update(ctx, cands[:8], _results(secs[:8]))
        return fb

    # No stored ensemble (an empty database): every prediction is the fallback's.
    empty = XGBCostModel(members=[], fallback=fallback(), num_threads=1)
    assert np.allclose(empty.predict(ctx, cands), empty.fallback.predict(ctx, cands))
    assert empty.sources == {"metaschedule": 1}

    # Two members trained on opposite labels disagree on every candidate.
    right = ensemble.train_booster(x, y, group, rounds=20, nthread=1)
    wrong = ensemble.train_booster(x, 1.0 - y, group, rounds=20, nthread=1)
    torn = XGBCostModel(members=[right, wrong], fallback=fallback(), num_threads=1)
    assert ensemble.predict(torn.members, x).spread > UNCERTAINTY_THRESHOLD
    assert np.allclose(torn.predict(ctx, cands), torn.fallback.predict(ctx, cands))
    assert np.allclose(torn.predict(ctx, cands[:4]), torn.fallback.predict(ctx, cands[:4])), "kept for the workload"
    assert torn.sources == {"metaschedule": 2}

    # Members that agree rank by themselves until the job has its own results; then the fallback blends in.
    sure = XGBCostModel(members=[right, right], fallback=metaschedule_model(1), num_threads=1)
    assert np.allclose(sure.predict(ctx, cands), ensemble.zscore(right.predict(__import__("xgboost").DMatrix(x))))
    assert sure.sources == {"tunehub": 1}
    sure.update(ctx, cands[:8], _results(secs[:8]))
    assert 0 < sure.blend_weight(next(iter(sure.groups))) < 0.5
    sure.predict(ctx, cands)
    assert sure.sources["blend"] + sure.sources["metaschedule"] == 1


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


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_leave_one_model_out_never_trains_on_the_held_out_workloads(
        db_url: str, session_factory: sessionmaker[Session]) -> None:
    """resnet has the 32³ matmul; bert has it too (other schedules) and the 16³ one: only bert's 16³ rows train."""
    from typer.testing import CliRunner

    from cost_model.leave_out import BASELINE, JOB_MODEL, evaluate_leave_out, split
    from db.cost_models import latest_evaluation
    from db.models import Measurement
    from tunehub.cli import app

    key = store_measurements(session_factory, 32, 0, model="resnet")
    store_measurements(session_factory, 32, 1, model="bert")
    store_measurements(session_factory, 16, 0, model="bert")
    with session_scope(session_factory) as s:
        by_n = {n: set(s.scalars(select(Measurement.id).join(Workload, Workload.id == Measurement.workload_id)
                                 .where(Workload.shash == workload_hash(matmul_workload(n)))).all()) for n in (16, 32)}
        resnet = s.scalar(select(Model).where(Model.name == "resnet"))
        resnet_id, prefix = resnet.id, resnet.sha256[:8]

    sp = split(session_factory, model="resnet")
    assert set(sp.train_measurement_ids) == by_n[16], "every 32³ row is held out, bert's included"
    assert [r.measurement_ids for r in sp.test] == [sorted(by_n[32])[:16]], "the test is resnet's own candidates"

    result = evaluate_leave_out(session_factory, model=prefix, k=3)
    assert result.model_id == resnet_id and result.model_name == "resnet" and result.target_key == key
    assert set(result.train_measurement_ids) == by_n[16]
    names = [m.model for m in result.later_half]
    assert names == ["tunehub", JOB_MODEL, "metaschedule-fleet", BASELINE]
    for m in result.later_half + result.all_measured:
        assert 0 <= m.pairwise_accuracy <= 1 and m.workloads == 1 and m.train_samples == 16
    assert result.later(BASELINE).test_samples == 8 and result.all_measured[0].test_samples == 16
    assert result.tunehub_wins == (result.later(JOB_MODEL).pairwise_accuracy
                                   > result.later(BASELINE).pairwise_accuracy)

    # The CLI: JSON, and --record stores the verdict that `auto` reads.
    out = CliRunner().invoke(app, ["cost-model", "eval", "--database-url", db_url, "--leave-out", "resnet",
                                   "--json", "-k", "3", "--record"])
    assert out.exit_code == 0, out.output
    body = json.loads(out.output)
    assert body["model_name"] == "resnet" and "train_measurement_ids" not in body
    assert [m["model"] for m in body["later_half"]] == names
    with session_scope(session_factory) as s:
        verdict = latest_evaluation(s, target_key=key)
    assert verdict is not None and verdict.tunehub_wins == body["tunehub_wins"]
    assert verdict.report["model_name"] == "resnet"
    bad = CliRunner().invoke(app, ["cost-model", "eval", "--database-url", db_url, "--leave-out", "gpt"])
    assert bad.exit_code != 0 and "no model 'gpt'" in bad.output


def test_the_job_records_its_cost_model_and_auto_follows_the_evidence(session_factory: sessionmaker[Session]) -> None:
    from common.settings import Settings
    from cost_model.model import XGBCostModel
    from db.cost_models import record_evaluation
    from db.job_claims import load_job
    from db.jobs import job_public
    from tuner.cost_models import CostModelKind, job_cost_model

    with session_scope(session_factory) as s:
        job = add_job(s, target=CPU_TARGET, status=JobStatus.running)
        add_task(s, job=job, workload=add_workload(s, mod=matmul_workload(16)))
        job_id, key = job.id, job.target_key
        assert job_public(s, job_id=job_id).cost_model is None
        spec = load_job(s, job_id=job_id)
    settings = Settings(search_threads=1)

    def choose(kind: CostModelKind) -> tuple[object, str | None]:
        model = job_cost_model(kind, spec, factory=session_factory, settings=settings, num_warmup_samples=0)
        with session_scope(session_factory) as s:
            return model, job_public(s, job_id=job_id).cost_model

    model, recorded = choose(CostModelKind.auto)
    assert recorded == "metaschedule" and not isinstance(model, XGBCostModel), "never evaluated: MetaSchedule's"
    with session_scope(session_factory) as s:
        record_evaluation(s, target_key=key, tunehub_wins=True, report={"models": 1})
    model, recorded = choose(CostModelKind.auto)
    assert recorded == "tunehub" and isinstance(model, XGBCostModel)
    assert model.fallback.num_warmup_samples == 0, "the job's own MetaSchedule model, as configured"
    with session_scope(session_factory) as s:
        record_evaluation(s, target_key=key, tunehub_wins=False, report={"models": 2})
    assert choose(CostModelKind.auto)[1] == "metaschedule", "the newest verdict decides"
    assert choose(CostModelKind.tunehub)[1] == "tunehub"
    assert choose(CostModelKind.metaschedule)[1] == "metaschedule"
