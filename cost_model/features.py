"""Fixed-length feature vectors of candidates, from MetaSchedule's ``PerStoreFeature``.

MetaSchedule gives one ``(n_stores, 164)`` array per candidate (TVM_NOTES §6).
Its own ``XGBModel`` predicts per store row and sums; we pool the rows into one
vector instead: the sum (what the whole kernel does), the max (its heaviest
store) and log(1 + n_stores). A fixed vector lets one booster be trained on
rows from every workload of a target key with plain ``xgb.train``, and lets us
persist and retrain it incrementally without MetaSchedule's custom objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

N_STORE_FEATURES = 164
N_FEATURES = 2 * N_STORE_FEATURES + 1


def pool(rows: np.ndarray) -> np.ndarray:
    """One candidate's ``(n_stores, 164)`` rows → a ``(329,)`` float32 vector."""
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[0] == 0:
        return np.zeros(N_FEATURES, dtype=np.float32)
    return np.concatenate([rows.sum(axis=0), rows.max(axis=0), [np.log1p(rows.shape[0])]]).astype(np.float32)


def extract(context: Any, candidates: Sequence[Any], extractor: Any | None = None) -> np.ndarray:
    """``(len(candidates), N_FEATURES)`` pooled features of MetaSchedule ``MeasureCandidate`` s."""
    if not candidates:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    if extractor is None:
        from tvm.s_tir import meta_schedule as ms

        extractor = ms.feature_extractor.PerStoreFeature()
    return np.stack([pool(f.numpy()) for f in extractor.extract_from(context, list(candidates))])


def labels(mean_secs: Sequence[float | None], best_secs: float | None) -> np.ndarray:
    """Normalised throughput per candidate: best/mean of its workload in (0, 1]; errors 0.

    The same target as MetaSchedule's ``XGBModel`` (``min_cost / costs``), but
    ``best_secs`` is the workload's best in the whole database, so labels of one
    workload stay comparable across jobs and model versions.
    """
    out = np.zeros(len(mean_secs), dtype=np.float32)
    if not best_secs:
        return out
    for i, m in enumerate(mean_secs):
        if m:
            out[i] = min(1.0, best_secs / m)
    return out
