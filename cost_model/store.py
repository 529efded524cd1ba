"""Training from the database, and the versioned boosters in ``cost_models``.

``refresh`` is the one entry point the tuner calls (at a job's start and end):
it reads the measurements of the target key newer than the current version's
watermark (``max_measurement_id``) and, when they are enough (``min_new`` and
``min_growth`` of what the model has seen), stores a new version:

- incremental: ``INCREMENTAL_ROUNDS`` more trees per ensemble member on the new
  samples only, on top of the current members (``xgb.train(xgb_model=...)``),
  cheap: only the new traces are replayed and featurised; with a ranking
  objective the new samples' labels (ranks among themselves, per workload) are
  consistent with the old ones;
- from scratch on every measurement of the key once the data has doubled since
  the last full training (``full_samples``), so the early trees fitted on a
  handful of workloads do not dominate forever.

Labels use each workload's best over the whole database at training time
(``cost_model.features.labels``). Flagged measurements (timed while the worker
was degraded or its CPUs were shared) are left out of training and labels. Boosters are stored as XGBoost's UBJSON
bytes, never pickled. Versions only grow; ``db.cost_models.latest`` is the current model.
The SQL lives in ``db.cost_models`` and ``db.training_data``.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cost_model import ensemble, features
from db import training_data
from db.cost_models import StoredModel, count_new, latest, save
from db.engine import session_scope

log = logging.getLogger(__name__)


@dataclass
class Samples:
    """Featurised measurements: one row per measurement that replayed."""

    x: np.ndarray
    y: np.ndarray
    workload_ids: np.ndarray
    mean_secs: list[float | None]
    measurement_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> Samples:
        return Samples(self.x[idx], self.y[idx], self.workload_ids[idx], [self.mean_secs[i] for i in idx],
                       self.measurement_ids[idx])


@dataclass
class WorkloadRecords:
    """The measurements of one workload, replayed: MetaSchedule candidates ready for features."""

    workload_id: int
    context: Any  # ms.TuneContext
    candidates: list[Any]  # ms.MeasureCandidate
    measurement_ids: list[int]
    mean_secs: list[float | None]


def load_records(
    factory: sessionmaker[Session], *, target_key: str, target: dict[str, Any] | str,
    after_id: int = 0, upto_id: int | None = None, limit: int = 50_000,
    workload_ids: list[int] | None = None, exclude_workload_ids: list[int] | None = None,
    model_id: int | None = None,
) -> list[WorkloadRecords]:
    """Training rows of the key (``db.training_data.training_rows``, same filters), replayed per workload."""
    from common.tvm_env import prepare_tvm

    target_dict = json.loads(target) if isinstance(target, str) else dict(target)
    prepare_tvm((str(target_dict["kind"]),))
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from common.tvm_json import apply_trace, workload_from_json

    with session_scope(factory) as session:
        rows = training_data.training_rows(
            session, target_key=target_key, after_id=after_id, upto_id=upto_id, limit=limit,
            workload_ids=workload_ids, exclude_workload_ids=exclude_workload_ids, model_id=model_id)
        wids = sorted({r.workload_id for r in rows})
        mods = training_data.workload_modules(session, workload_ids=wids)
    by_wl: dict[int, list[tuple[int, float | None, str]]] = defaultdict(list)
    for r in rows:
        by_wl[r.workload_id].append((r.measurement_id, r.mean_secs, r.trace_json))
    tgt = tvm.target.Target(target_dict)
    out = []
    for wid, items in by_wl.items():
        try:
            mod = workload_from_json(mods[wid])
            ctx = ms.TuneContext(mod=mod, target=tgt, task_name=f"workload{wid}", num_threads=1)  # no psutil
            args_info = list(ms.arg_info.ArgInfo.from_entry_func(mod, remove_preproc=True))
        except Exception as exc:  # noqa: BLE001  (one broken workload does not stop training)
            log.warning("workload %d: cannot featurise (%s), skipped", wid, str(exc)[:200])
            continue
        recs = WorkloadRecords(wid, ctx, [], [], [])
        for mid, mean, trace in items:
            try:
                recs.candidates.append(ms.MeasureCandidate(apply_trace(mod, trace), args_info))
            except Exception as exc:  # noqa: BLE001  (a trace that no longer replays is left out)
                log.debug("measurement %d: trace does not replay (%s)", mid, str(exc)[:200])
                continue
            recs.measurement_ids.append(mid)
            recs.mean_secs.append(mean)
        if recs.candidates:
            out.append(recs)
    return out


def featurise(records: list[WorkloadRecords]) -> Samples:
    """Features and per-workload rank labels of replayed records."""
    from tvm.s_tir import meta_schedule as ms

    extractor = ms.feature_extractor.PerStoreFeature()
    xs, ys, ws, secs, ids = [], [], [], [], []
    for r in records:
        xs.append(features.extract(r.context, r.candidates, extractor))
        ys.append(features.rank_labels(r.mean_secs))
        ws.extend([r.workload_id] * len(r.candidates))
        secs.extend(r.mean_secs)
        ids.extend(r.measurement_ids)
    if not xs:
        return Samples(np.zeros((0, features.N_FEATURES), np.float32), np.zeros(0, np.float32),
                       np.zeros(0, np.int64), [], np.zeros(0, np.int64))
    return Samples(np.concatenate(xs), np.concatenate(ys), np.asarray(ws, np.int64), secs, np.asarray(ids, np.int64))


def load_samples(
    factory: sessionmaker[Session], *, target_key: str, target: dict[str, Any] | str,
    after_id: int = 0, upto_id: int | None = None, limit: int = 50_000,
) -> Samples:
    """Every measurement of the key with ``after_id < id <= upto_id``, replayed and featurised."""
    return featurise(load_records(factory, target_key=target_key, target=target, after_id=after_id,
                                  upto_id=upto_id, limit=limit))


def usable(model: StoredModel | None) -> bool:
    """A stored model of the current feature layout (an older layout is retrained, never loaded)."""
    return model is not None and model.meta.get("layout") == features.LAYOUT


def refresh(
    factory: sessionmaker[Session], *, target_key: str, target: dict[str, Any] | str,
    min_new: int = 16, min_growth: float = 0.2, nthread: int = 2,
) -> StoredModel | None:
    """Retrain and store a new version when the key's data grew enough; returns the current model."""
    with session_scope(factory) as session:
        current = latest(session, target_key=target_key)
        after = current.max_measurement_id if usable(current) else 0
        n_new, newest = count_new(session, target_key=target_key, after_id=after)
    seen = current.n_samples if usable(current) else 0
    if n_new < max(min_new, int(min_growth * seen)):
        return current
    full = not usable(current) or seen + n_new >= 2 * max(current.full_samples, 1)  # type: ignore[union-attr]
    samples = load_samples(factory, target_key=target_key, target=target, after_id=0 if full else after,
                           upto_id=newest)
    if len(samples) == 0 or len(np.unique(samples.y)) < 2:
        return current
    if full:
        members = ensemble.train_ensemble(samples.x, samples.y, samples.workload_ids, rounds=ensemble.FULL_ROUNDS,
                                          nthread=nthread)
        n_samples, full_samples = len(samples), len(samples)
    else:
        assert current is not None
        members = ensemble.train_ensemble(samples.x, samples.y, samples.workload_ids,
                                          rounds=ensemble.INCREMENTAL_ROUNDS, nthread=nthread,
                                          bases=ensemble.from_bytes(current.blob), seed=current.version)
        n_samples, full_samples = seen + len(samples), current.full_samples
    meta = {"layout": features.LAYOUT, "n_features": features.N_FEATURES, "objective": ensemble.OBJECTIVE,
            "members": len(members), "training": "full" if full else "incremental", "new_samples": len(samples)}
    try:
        with session_scope(factory) as session:
            racer = latest(session, target_key=target_key)
            if usable(racer) and racer.max_measurement_id >= newest:  # type: ignore[union-attr]
                return racer  # another tuner trained on this data
            version = save(session, target_key=target_key, blob=ensemble.to_bytes(members), n_samples=n_samples,
                           full_samples=full_samples, max_measurement_id=newest, meta=meta)
    except IntegrityError:  # another tuner stored this version first: theirs is as good
        log.info("cost model for %s: another process stored a new version first", target_key[:80])
        with session_scope(factory) as session:
            return latest(session, target_key=target_key)
    with session_scope(factory) as session:
        stored = latest(session, target_key=target_key)
    log.info("cost model for %s: version %d trained (%s, %d new samples, %d in all)",
             target_key[:80], version, meta["training"], len(samples), n_samples)
    return stored


def load_cost_model(
    factory: sessionmaker[Session], *, target_key: str, num_threads: int = 2, seed: int = 0,
    fallback: Any | None = None,
) -> Any:
    """An ``XGBCostModel`` over the key's current stored ensemble (none usable: ``fallback`` ranks everything).

    ``fallback``: MetaSchedule's model it wraps (default: ``cost_model.model.make_fallback``).
    """
    from cost_model.model import XGBCostModel

    with session_scope(factory) as session:
        current = latest(session, target_key=target_key)
    if not usable(current):
        return XGBCostModel(num_threads=num_threads, seed=seed, fallback=fallback)
    assert current is not None
    return XGBCostModel(members=ensemble.from_bytes(current.blob), base_version=current.version,
                        num_threads=num_threads, seed=seed, fallback=fallback)
