"""``XGBCostModel``: the search's cost model, warm from the database and learning online.

A MetaSchedule ``PyCostModel`` (``load``/``save``/``update``/``predict``). It
starts from ``base``, the booster trained on every stored measurement of the
target key (``cost_model.store``), so the very first generation of a new job
is already ranked by what the fleet has measured, where MetaSchedule's own
``XGBModel`` returns random scores for its first 100 samples. Each ``update``
adds the job's measurements to an in-memory set and boosts a few more trees on
top of ``base`` from them (``xgb.train(..., xgb_model=base)``): the job's own
workload corrects what the fleet model got wrong, and ``base`` itself stays
untouched. With no ``base`` (an empty database) it trains from scratch once it
has ``warmup_samples`` measurements and returns random scores until then.

Labels are per-workload normalised throughput (``cost_model.features.labels``):
within this model's online set the best is the best it has seen, as in
MetaSchedule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tvm.s_tir.meta_schedule.cost_model import PyCostModel
from tvm.ir.utils import derived_object

from cost_model import features

log = logging.getLogger(__name__)

DEFAULT_PARAMS: dict[str, Any] = {
    "max_depth": 10,
    "gamma": 0.001,
    "min_child_weight": 0,
    "eta": 0.2,
    "objective": "reg:squarederror",
    "tree_method": "hist",
    "verbosity": 0,
}


def train_booster(
    x: np.ndarray, y: np.ndarray, *, rounds: int, base: Any | None = None, nthread: int = 2,
    params: dict[str, Any] | None = None,
) -> Any:
    """``rounds`` more trees on (x, y), on top of ``base`` when given (which is not modified)."""
    import xgboost as xgb

    dtrain = xgb.DMatrix(x, label=y)
    return xgb.train({**DEFAULT_PARAMS, "nthread": nthread, **(params or {})}, dtrain, num_boost_round=rounds,
                     xgb_model=base)


def booster_from_bytes(blob: bytes) -> Any:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(blob))
    return booster


def booster_to_bytes(booster: Any) -> bytes:
    """XGBoost's own UBJSON serialisation (no pickle)."""
    return bytes(booster.save_raw(raw_format="ubj"))


@dataclass
class _Group:
    x: list[np.ndarray] = field(default_factory=list)
    secs: list[float | None] = field(default_factory=list)


@derived_object
class XGBCostModel(PyCostModel):
    """XGBoost on pooled ``PerStoreFeature`` vectors; one instance may serve every task of a job."""

    def __init__(
        self,
        *,
        base: Any | None = None,
        base_version: int | None = None,
        num_threads: int = 2,
        warmup_samples: int = 16,
        online_rounds: int = 30,
        scratch_rounds: int = 100,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.base = base
        self.base_version = base_version
        self.booster = base
        self.num_threads = num_threads
        self.warmup_samples = warmup_samples
        self.online_rounds = online_rounds
        self.scratch_rounds = scratch_rounds
        self.groups: dict[str, _Group] = {}
        self.n_samples = 0
        self._rng = np.random.default_rng(seed)
        self._extractor: Any | None = None

    def _extract(self, context: Any, candidates: list[Any]) -> np.ndarray:
        if self._extractor is None:
            from tvm.s_tir import meta_schedule as ms

            self._extractor = ms.feature_extractor.PerStoreFeature()
        return features.extract(context, candidates, self._extractor)

    # --- PyCostModel ------------------------------------------------------------

    def load(self, path: str) -> None:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(path)
        self.base = self.booster = booster

    def save(self, path: str) -> None:
        if self.booster is None:
            raise ValueError("XGBCostModel has no booster to save yet")
        self.booster.save_model(path)

    def update(self, context: Any, candidates: list[Any], results: list[Any]) -> None:
        if not candidates:
            return
        from common.tvm_json import workload_hash

        x = self._extract(context, candidates)
        group = self.groups.setdefault(workload_hash(context.mod), _Group())
        for row, result in zip(x, results):
            secs = [float(s) for s in result.run_secs] if result.run_secs else None
            group.x.append(row)
            group.secs.append(sum(secs) / len(secs) if secs else None)
        self.n_samples += len(candidates)
        self._retrain()

    def predict(self, context: Any, candidates: list[Any]) -> np.ndarray:
        if self.booster is None:
            return self._rng.uniform(0, 1, size=len(candidates)).astype("float64")
        import xgboost as xgb

        x = self._extract(context, candidates)
        return np.asarray(self.booster.predict(xgb.DMatrix(x)), dtype="float64")

    # --- training -----------------------------------------------------------------

    def training_set(self) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for group in self.groups.values():
            valid = [s for s in group.secs if s]
            xs.extend(group.x)
            ys.append(features.labels(group.secs, min(valid) if valid else None))
        if not xs:
            return np.zeros((0, features.N_FEATURES), np.float32), np.zeros(0, np.float32)
        return np.stack(xs), np.concatenate(ys)

    def _retrain(self) -> None:
        if self.base is None and self.n_samples < self.warmup_samples:
            return
        x, y = self.training_set()
        if not np.any(y > 0):
            return  # nothing valid yet: no signal to learn from
        rounds = self.online_rounds if self.base is not None else self.scratch_rounds
        self.booster = train_booster(x, y, rounds=rounds, base=self.base, nthread=self.num_threads)
