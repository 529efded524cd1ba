"""``XGBCostModel``: the search's cost model, warm from the database, knowing when it does not know.

A MetaSchedule ``PyCostModel`` (``load``/``save``/``update``/``predict``) over
an ensemble of rankers (``cost_model.ensemble``) trained on every stored
measurement of the target key (``cost_model.store``), so the first generation
of a new job is ranked by what the fleet has measured. It wraps MetaSchedule's
own ``XGBModel`` (``fallback``) and feeds it every result of the job, so:

- **fallback**: a workload whose first batch of candidates the members rank too
  differently (spread above ``UNCERTAINTY_THRESHOLD``) is unlike what the fleet
  has measured; it is ranked by the fallback, exactly as a MetaSchedule job
  would rank it, until the next ``update`` (the decision is kept per workload
  between updates, because the evolutionary search compares scores across calls);
  with no stored ensemble at all, every workload is;
- **online**: each ``update`` boosts ``online_rounds`` more trees on each stored
  member from the job's own measurements (rank labels per workload); the
  stored members stay untouched;
- **blend**: once the fallback is out of its warm-up and has seen ``n`` of the
  workload's results, scores are ``(1 - a)·ensemble + a·fallback`` (both
  z-scored) with ``a = n / (n + BLEND_SAMPLES)``: the job's own evidence
  takes over as it grows.

``sources`` counts which of these answered each ``predict`` call.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.cost_model import PyCostModel

from cost_model import ensemble, features

log = logging.getLogger(__name__)

UNCERTAINTY_THRESHOLD = 0.5
"""Above this mean spread of the members' z-scores a workload is ranked by MetaSchedule's model.

Members that rank a batch identically spread 0; members that are uncorrelated
spread about 0.87 (four members); 0.5 is a mean pairwise correlation of about 0.67."""
MIN_DECISION_BATCH = 8
"""A batch smaller than this decides for itself only (too few candidates to judge agreement)."""
BLEND_SAMPLES = 64
"""The job's own results of a workload at which its MetaSchedule model gets half the weight."""


@dataclass
class _Group:
    x: list[np.ndarray] = field(default_factory=list)
    secs: list[float | None] = field(default_factory=list)


def make_fallback(num_threads: int, num_warmup_samples: int = 100) -> Any:
    """MetaSchedule's ``XGBModel`` with its defaults (``tuner.cost_models`` passes the job's own)."""
    from tvm.s_tir import meta_schedule as ms

    return ms.cost_model.XGBModel(num_warmup_samples=num_warmup_samples, num_tuning_cores=num_threads)


@derived_object
class XGBCostModel(PyCostModel):
    """A stored ensemble plus the job's online trees, falling back to MetaSchedule's model when unsure."""

    def __init__(
        self,
        *,
        members: list[Any] | None = None,
        base_version: int | None = None,
        fallback: Any | None = None,
        num_threads: int = 2,
        online_rounds: int = 20,
        threshold: float = UNCERTAINTY_THRESHOLD,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.base = list(members or [])
        self.members = list(self.base)
        self.base_version = base_version
        self.fallback = fallback if fallback is not None else make_fallback(num_threads)
        self.num_threads = num_threads
        self.online_rounds = online_rounds
        self.threshold = threshold
        self.seed = seed
        self.groups: dict[str, _Group] = {}
        self.n_samples = 0
        self.sources: Counter[str] = Counter()
        self._confident: dict[str, bool] = {}
        self._workload: dict[str, np.ndarray] = {}
        self._extractor: Any | None = None

    def _extract(self, context: Any, candidates: list[Any], wid: str) -> np.ndarray:
        if self._extractor is None:
            from tvm.s_tir import meta_schedule as ms

            self._extractor = ms.feature_extractor.PerStoreFeature()
        if wid not in self._workload:
            self._workload[wid] = features.workload_features(context.mod)
        return features.extract(context, candidates, self._extractor, self._workload[wid])

    # --- PyCostModel ------------------------------------------------------------

    def load(self, path: str) -> None:
        with open(path, "rb") as f:
            self.base = self.members = ensemble.from_bytes(f.read())
        self._confident.clear()

    def save(self, path: str) -> None:
        if not self.members:
            raise ValueError("XGBCostModel has no ensemble to save")
        with open(path, "wb") as f:
            f.write(ensemble.to_bytes(self.members))

    def update(self, context: Any, candidates: list[Any], results: list[Any]) -> None:
        if not candidates:
            return
        from common.tvm_json import workload_hash

        self.fallback.update(context, candidates, results)
        wid = workload_hash(context.mod)
        x = self._extract(context, candidates, wid)
        group = self.groups.setdefault(wid, _Group())
        for row, result in zip(x, results):
            secs = [float(s) for s in result.run_secs] if result.run_secs else None
            group.x.append(row)
            group.secs.append(sum(secs) / len(secs) if secs else None)
        self.n_samples += len(candidates)
        self._retrain()
        self._confident.clear()  # the members changed: judge each workload again

    def predict(self, context: Any, candidates: list[Any]) -> np.ndarray:
        from common.tvm_json import workload_hash

        if not self.members:
            self.sources["metaschedule"] += 1
            return np.asarray(self.fallback.predict(context, candidates), dtype="float64")
        wid = workload_hash(context.mod)
        pred = ensemble.predict(self.members, self._extract(context, candidates, wid))
        confident = self._confident.get(wid)
        if confident is None:
            confident = pred.spread <= self.threshold
            if len(candidates) >= MIN_DECISION_BATCH:
                self._confident[wid] = confident
                if not confident:
                    log.info("cost model: workload %s is unlike the stored data (spread %.2f > %.2f): "
                             "ranked by MetaSchedule's model", wid, pred.spread, self.threshold)
        if not confident:
            self.sources["metaschedule"] += 1
            return np.asarray(self.fallback.predict(context, candidates), dtype="float64")
        a = self.blend_weight(wid)
        if a == 0.0:
            self.sources["tunehub"] += 1
            return pred.score
        self.sources["blend"] += 1
        own = ensemble.zscore(np.asarray(self.fallback.predict(context, candidates), dtype="float64"))
        return (1.0 - a) * pred.score + a * own

    # --- online learning ------------------------------------------------------------

    def blend_weight(self, wid: str) -> float:
        """The fallback's share for this workload: 0 while it is warming up or has seen none of it."""
        fb = self.fallback
        if getattr(fb, "booster", None) is None or fb.data_size < fb.num_warmup_samples:
            return 0.0
        n = len(self.groups[wid].secs) if wid in self.groups else 0
        return n / (n + BLEND_SAMPLES)

    def training_set(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, rank labels, workload group) of the job's own results."""
        xs, ys, gs = [], [], []
        for g, group in enumerate(self.groups.values()):
            xs.extend(group.x)
            ys.append(features.rank_labels(group.secs))
            gs.append(np.full(len(group.x), g, dtype=np.int64))
        if not xs:
            return np.zeros((0, features.N_FEATURES), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        return np.stack(xs), np.concatenate(ys), np.concatenate(gs)

    def _retrain(self) -> None:
        if not self.base:
            return  # no stored ensemble: the fallback is the model, and it learns in its own update
        x, y, g = self.training_set()
        if len(np.unique(y)) < 2:
            return  # all equal (one result, or all errors): nothing to rank
        self.members = ensemble.train_ensemble(x, y, g, rounds=self.online_rounds, bases=self.base,
                                               nthread=self.num_threads, seed=self.seed)
