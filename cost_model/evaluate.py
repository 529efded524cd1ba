"""How well a cost model ranks held-out measurements: ``evaluate`` (``tunehub cost-model eval``).

Every measurement of a target key is replayed; per workload a random
``holdout`` fraction is held out (at least 2 valid ones), and two models are
trained on the rest, on the same data:

- ``tunehub``: ``XGBCostModel`` trained from scratch on pooled features, as
  ``cost_model.store.refresh`` trains the stored model;
- ``metaschedule``: MetaSchedule's own ``XGBModel`` (per-store rows, its custom
  objective), fed workload by workload through ``update``.

Metrics per workload on the held-out valid measurements, averaged over workloads:
pairwise ranking accuracy (pairs whose latencies differ by >1 %, ordered as
measured) and top-k recall (of the k truly fastest, how many are in the
model's top k).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from common.errors import BadInput, NotFound
from db import training_data
from db.engine import session_scope


@dataclass(frozen=True)
class ModelScores:
    """One model's ranking quality, averaged over the workloads held out."""

    model: str
    pairwise_accuracy: float
    top_k_recall: float
    workloads: int
    test_samples: int
    train_samples: int


@dataclass(frozen=True)
class Scores:
    """Both models' scores on one target key, with the k of top-k recall."""

    target_key: str
    k: int
    models: list[ModelScores]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pairwise_accuracy(pred: np.ndarray, secs: np.ndarray) -> float | None:
    """Share of pairs (latencies >1 % apart) where higher score ↔ faster."""
    right = total = 0
    for i in range(len(secs)):
        for j in range(i + 1, len(secs)):
            if abs(secs[i] - secs[j]) <= 0.01 * min(secs[i], secs[j]):
                continue
            total += 1
            right += (pred[i] > pred[j]) == (secs[i] < secs[j])
    return right / total if total else None


def top_k_recall(pred: np.ndarray, secs: np.ndarray, k: int) -> float | None:
    if len(secs) <= k:
        return None
    truth = set(np.argsort(secs)[:k].tolist())
    chosen = set(np.argsort(-pred)[:k].tolist())
    return len(truth & chosen) / k


def evaluate(
    factory: sessionmaker[Session], *, target_key: str | None = None, target: dict[str, Any] | str | None = None,
    holdout: float = 0.3, k: int = 5, seed: int = 0, nthread: int = 2,
) -> Scores:
    """Train both models on the key's measurements less a held-out share, and score their ranking of it.

    ``target_key`` defaults to the key with the most measurements, ``target`` to a
    worker's target JSON of that key. NotFound on an empty database, BadInput when
    no workload has enough valid measurements to hold any out.
    """
    from tvm.s_tir import meta_schedule as ms

    from cost_model import features
    from cost_model.model import train_booster
    from cost_model.store import FULL_ROUNDS, featurise, load_records

    with session_scope(factory) as session:
        target_key = target_key or training_data.busiest_target_key(session)
        if target_key is None:
            raise NotFound("no measurements in the database")
        target = target or training_data.target_of_key(session, target_key=target_key)
    rng = np.random.default_rng(seed)
    records = load_records(factory, target_key=target_key, target=target)
    splits = []
    for r in records:
        valid = [i for i, s in enumerate(r.mean_secs) if s]
        n_test = int(round(holdout * len(valid)))
        if n_test < 2:
            continue
        test = set(rng.choice(valid, size=n_test, replace=False).tolist())
        splits.append((r, [i for i in range(len(r.candidates)) if i not in test], sorted(test)))
    if not splits:
        raise BadInput(f"not enough measurements of {target_key!r} to hold any out")

    # tunehub: pooled features, one booster from scratch on every workload's training part.
    samples = featurise([r for r, _, _ in splits])
    offsets, at = {}, 0
    for r, _, _ in splits:
        offsets[r.workload_id] = at
        at += len(r.candidates)
    train_idx = np.concatenate([np.asarray(tr, np.int64) + offsets[r.workload_id] for r, tr, _ in splits])
    ys = []
    for r, tr, _ in splits:  # labels from the training part's own best: no peeking at the held-out ones
        tr_secs = [r.mean_secs[i] for i in tr]
        valid = [s for s in tr_secs if s]
        ys.append(features.labels(tr_secs, min(valid) if valid else None))
    booster = train_booster(samples.x[train_idx], np.concatenate(ys), rounds=FULL_ROUNDS, nthread=nthread)
    import xgboost as xgb

    ours_pred = {r.workload_id: booster.predict(xgb.DMatrix(samples.x[np.asarray(te) + offsets[r.workload_id]]))
                 for r, _, te in splits}

    # MetaSchedule's XGBModel on the same training data.
    msm = ms.cost_model.XGBModel(num_warmup_samples=0, num_tuning_cores=nthread, adaptive_training=False)
    for r, tr, _ in splits:
        results = [ms.runner.RunnerResult(run_secs=[r.mean_secs[i]] if r.mean_secs[i] else None,
                                          error_msg=None if r.mean_secs[i] else "error") for i in tr]
        msm.update(r.context, [r.candidates[i] for i in tr], results)
    ms_pred = {r.workload_id: np.asarray(msm.predict(r.context, [r.candidates[i] for i in te])) for r, _, te in splits}

    out = []
    n_train = sum(len(tr) for _, tr, _ in splits)
    n_test = sum(len(te) for _, _, te in splits)
    for name, preds in (("tunehub", ours_pred), ("metaschedule", ms_pred)):
        accs, recalls = [], []
        for r, _, te in splits:
            secs = np.asarray([r.mean_secs[i] for i in te], dtype=np.float64)
            acc = pairwise_accuracy(preds[r.workload_id], secs)
            rec = top_k_recall(preds[r.workload_id], secs, k)
            if acc is not None:
                accs.append(acc)
            if rec is not None:
                recalls.append(rec)
        out.append(ModelScores(name, float(np.mean(accs)) if accs else float("nan"),
                          float(np.mean(recalls)) if recalls else float("nan"), len(splits), n_test, n_train))
    return Scores(target_key=target_key, k=k, models=out)


def markdown(scores: Scores) -> str:
    """The scores as a markdown table, one row per model."""
    lines = [f"| model | pairwise accuracy | top-{scores.k} recall | workloads | train | held out |",
             "|---|---|---|---|---|---|"]
    for s in scores.models:
        lines.append(f"| {s.model} | {s.pairwise_accuracy:.3f} | {s.top_k_recall:.3f} | {s.workloads} | "
                     f"{s.train_samples} | {s.test_samples} |")
    return "\n".join(lines)

