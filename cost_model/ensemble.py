"""An ensemble of XGBoost rankers: training, prediction with uncertainty, and its stored bytes.

Each member is trained with XGBoost's ranking objective (``OBJECTIVE``), one
query group (qid) per workload, on a bootstrap resample *by workload* of the
training set: a member sees some operators twice and others not at all. On a
workload like the ones it saw the members agree; on one unlike any, they
disagree, and that disagreement (``Prediction.spread``: the mean over the
candidates of the members' standard deviation, each member's scores z-scored
within the batch first, since a ranker's scale means nothing) is the model's
uncertainty. Members also differ by seed, row and column subsampling, so a
single-workload training set still gives a spread rather than false certainty.

Stored as XGBoost's own UBJSON per member, framed by lengths (never pickle);
a single pre-ensemble booster still loads as a one-member ensemble.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

OBJECTIVE = "rank:pairwise"
"""Chosen by ``bench/cost_model_eval.py --objective`` on a small real database (8 workloads, 4 models):
pairwise accuracy of the job model 0.661 with ``rank:pairwise``, 0.656 with ``reg:squarederror``
on the same rank labels, 0.613 with ``rank:ndcg``; re-check on a large database."""
ENSEMBLE_SIZE = 4
FULL_ROUNDS = 150
INCREMENTAL_ROUNDS = 30
NDCG_GRADES = 31
"""``rank:ndcg`` gets the [0, 1] rank labels as integer grades 0..31 (its exponential gain's limit)."""

DEFAULT_PARAMS: dict[str, Any] = {
    "max_depth": 6,
    "gamma": 0.001,
    "min_child_weight": 0,
    "eta": 0.2,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "tree_method": "hist",
    "verbosity": 0,
}
_MAGIC = b"tunehub-ensemble/1\n"


def _dmatrix(x: np.ndarray, y: np.ndarray | None = None, qid: np.ndarray | None = None) -> Any:
    import xgboost as xgb

    return xgb.DMatrix(x, label=y, qid=qid)


def train_booster(
    x: np.ndarray, y: np.ndarray, qid: np.ndarray, *, rounds: int, base: Any | None = None, nthread: int = 2,
    seed: int = 0, objective: str = OBJECTIVE,
) -> Any:
    """``rounds`` more trees on (x, y) grouped by ``qid`` (ascending), on top of ``base`` (left unmodified)."""
    import xgboost as xgb

    params = {**DEFAULT_PARAMS, "objective": objective, "nthread": nthread, "seed": seed}
    if objective == "rank:ndcg":  # its exponential gain wants integer relevance grades, at most 31
        y = np.rint(np.asarray(y) * NDCG_GRADES)
    return xgb.train(params, _dmatrix(x, y, qid if objective.startswith("rank:") else None),
                     num_boost_round=rounds, xgb_model=base)


def bootstrap_by_group(groups: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, qid) of a resample of whole groups with replacement; each draw its own ascending qid."""
    ids = np.unique(groups)
    rows, qid = [], []
    for q, g in enumerate(rng.choice(ids, size=len(ids), replace=True)):
        idx = np.flatnonzero(groups == g)
        rows.append(idx)
        qid.append(np.full(len(idx), q, dtype=np.int64))
    return np.concatenate(rows), np.concatenate(qid)


def train_ensemble(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, rounds: int = FULL_ROUNDS, size: int = ENSEMBLE_SIZE,
    bases: Sequence[Any] | None = None, nthread: int = 2, seed: int = 0, objective: str = OBJECTIVE,
) -> list[Any]:
    """``size`` members (or one per ``bases``, boosted further), each on a by-workload bootstrap of the rows."""
    rng = np.random.default_rng(seed)
    n = len(bases) if bases else size
    out = []
    for i in range(n):
        rows, qid = bootstrap_by_group(groups, rng)
        out.append(train_booster(x[rows], y[rows], qid, rounds=rounds, base=bases[i] if bases else None,
                                 nthread=nthread, seed=seed + i, objective=objective))
    return out


def zscore(p: np.ndarray) -> np.ndarray:
    """Scores centred and scaled within one batch (all equal: zeros)."""
    p = np.asarray(p, dtype=np.float64)
    sd = p.std()
    return (p - p.mean()) / sd if sd > 0 else np.zeros_like(p)


@dataclass(frozen=True)
class Prediction:
    """The ensemble's view of one batch: the mean z-scored score per candidate and the members' disagreement."""

    score: np.ndarray
    spread: float


def predict(members: Sequence[Any], x: np.ndarray) -> Prediction:
    """Mean of the members' z-scored predictions, and their mean per-candidate standard deviation."""
    if not members or len(x) == 0:
        return Prediction(np.zeros(len(x)), float("inf") if not members else 0.0)
    dm = _dmatrix(x)
    z = np.stack([zscore(m.predict(dm)) for m in members])
    return Prediction(z.mean(axis=0), float(z.std(axis=0).mean()))


def to_bytes(members: Sequence[Any]) -> bytes:
    """Members as length-framed UBJSON."""
    parts = [_MAGIC, struct.pack("<I", len(members))]
    for m in members:
        raw = bytes(m.save_raw(raw_format="ubj"))
        parts += [struct.pack("<Q", len(raw)), raw]
    return b"".join(parts)


def from_bytes(blob: bytes) -> list[Any]:
    """The members of ``to_bytes`` output; a single booster's own bytes give one member."""
    import xgboost as xgb

    def load(raw: bytes) -> Any:
        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        return booster

    if not blob.startswith(_MAGIC):
        return [load(blob)]
    at = len(_MAGIC)
    (n,) = struct.unpack_from("<I", blob, at)
    at += 4
    out = []
    for _ in range(n):
        (size,) = struct.unpack_from("<Q", blob, at)
        at += 8
        out.append(load(blob[at: at + size]))
        at += size
    return out
