"""How well a cost model ranks held-out measurements: the metrics, and a random per-workload holdout.

Metrics per workload on held-out valid measurements, averaged over workloads:
pairwise ranking accuracy (pairs whose latencies differ by >1 %, ordered as
measured) and top-k recall (of the k truly fastest, how many are in the
model's top k).

``evaluate`` (``tunehub cost-model eval`` without ``--leave-out``): per workload
a random ``holdout`` fraction is held out (at least 2 valid ones), and two
models are trained on the rest, on the same data: tunehub's ensemble
(``cost_model.ensemble``, as ``cost_model.store.refresh`` trains it) and
MetaSchedule's own ``XGBModel`` (per-store rows, its custom objective), fed
workload by workload through ``update``. It sees every workload in training,
so it measures fitting, not transfer to a new model: ``cost_model.leave_out``
measures that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from common.errors import BadInput, NotFound
from cost_model import ensemble
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
    """Of the k fastest, the share the model also puts in its top k (None with k or fewer candidates)."""
    if len(secs) <= k:
        return None
    truth = set(np.argsort(secs)[:k].tolist())
    chosen = set(np.argsort(-pred)[:k].tolist())
    return len(truth & chosen) / k


def score(name: str, preds: Mapping[int, np.ndarray], secs: Mapping[int, np.ndarray], *, k: int,
          train_samples: int) -> ModelScores:
    """Mean pairwise accuracy and top-k recall over the workloads in ``secs`` (valid seconds, same order as preds)."""
    accs, recalls = [], []
    for wid, s in secs.items():
        acc = pairwise_accuracy(np.asarray(preds[wid]), s)
        rec = top_k_recall(np.asarray(preds[wid]), s, k)
        if acc is not None:
            accs.append(acc)
        if rec is not None:
            recalls.append(rec)
    return ModelScores(name, float(np.mean(accs)) if accs else float("nan"),
                       float(np.mean(recalls)) if recalls else float("nan"), len(secs),
                       sum(len(s) for s in secs.values()), train_samples)


def runner_results(mean_secs: Sequence[float | None]) -> list[Any]:
    """MetaSchedule ``RunnerResult`` s of stored means (None: an error)."""
    from tvm.s_tir import meta_schedule as ms

    return [ms.runner.RunnerResult(run_secs=[m] if m else None, error_msg=None if m else "error") for m in mean_secs]


def metaschedule_model(nthread: int) -> Any:
    """MetaSchedule's ``XGBModel`` that ranks from its first update (no random warm-up), for evaluations."""
    from tvm.s_tir import meta_schedule as ms

    return ms.cost_model.XGBModel(num_warmup_samples=0, num_tuning_cores=nthread, adaptive_training=False)


def evaluate(
    factory: sessionmaker[Session], *, target_key: str | None = None, target: dict[str, Any] | str | None = None,
    holdout: float = 0.3, k: int = 5, seed: int = 0, nthread: int = 2, objective: str = ensemble.OBJECTIVE,
) -> Scores:
    """Train both models on the key's measurements less a held-out share, and score their ranking of it.

    ``target_key`` defaults to the key with the most measurements, ``target`` to a
    worker's target JSON of that key. NotFound on an empty database, BadInput when
    no workload has enough valid measurements to hold any out.
    """
    from cost_model import features
    from cost_model.store import featurise, load_records

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
        n_test = round(holdout * len(valid))
        if n_test < 2:
            continue
        test = set(rng.choice(valid, size=n_test, replace=False).tolist())
        splits.append((r, [i for i in range(len(r.candidates)) if i not in test], sorted(test)))
    if not splits:
        raise BadInput(f"not enough measurements of {target_key!r} to hold any out")

    # tunehub: one ensemble from scratch on every workload's training part (labels from that part only).
    samples = featurise([r for r, _, _ in splits])
    offsets, at = {}, 0
    for r, _, _ in splits:
        offsets[r.workload_id] = at
        at += len(r.candidates)
    train_idx = np.concatenate([np.asarray(tr, np.int64) + offsets[r.workload_id] for r, tr, _ in splits])
    ys = np.concatenate([features.rank_labels([r.mean_secs[i] for i in tr]) for r, tr, _ in splits])
    members = ensemble.train_ensemble(samples.x[train_idx], ys, samples.workload_ids[train_idx], nthread=nthread,
                                      seed=seed, objective=objective)
    ours = {r.workload_id: ensemble.predict(members, samples.x[np.asarray(te) + offsets[r.workload_id]]).score
            for r, _, te in splits}

    # MetaSchedule's XGBModel on the same training data.
    msm = metaschedule_model(nthread)
    for r, tr, _ in splits:
        msm.update(r.context, [r.candidates[i] for i in tr], runner_results([r.mean_secs[i] for i in tr]))
    theirs = {r.workload_id: np.asarray(msm.predict(r.context, [r.candidates[i] for i in te])) for r, _, te in splits}

    secs = {r.workload_id: np.asarray([r.mean_secs[i] for i in te], dtype=np.float64) for r, _, te in splits}
    n_train = len(train_idx)
    return Scores(target_key=target_key, k=k, models=[
        score("tunehub", ours, secs, k=k, train_samples=n_train),
        score("metaschedule", theirs, secs, k=k, train_samples=n_train)])


def markdown(scores: Scores) -> str:
    """The scores as a markdown table, one row per model."""
    lines = [f"| model | pairwise accuracy | top-{scores.k} recall | workloads | train | held out |",
             "|---|---|---|---|---|---|"]
    for s in scores.models:
        lines.append(f"| {s.model} | {s.pairwise_accuracy:.3f} | {s.top_k_recall:.3f} | {s.workloads} | "
                     f"{s.train_samples} | {s.test_samples} |")
    return "\n".join(lines)
