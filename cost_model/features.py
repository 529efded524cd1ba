"""Fixed-length feature vectors of candidates and per-workload rank labels: the one definition.

A candidate's vector is two parts:

- **schedule** (``N_SCHEDULE_FEATURES``): MetaSchedule's ``PerStoreFeature`` gives
  one ``(n_stores, 164)`` array per candidate (TVM_NOTES §6); its own ``XGBModel``
  predicts per store row and sums, we pool the rows into the sum (what the whole
  kernel does), the max (its heaviest store) and log(1 + n_stores);
- **workload** (``N_WORKLOAD_FEATURES``): what the operator is, the same for every
  candidate of a workload: its family (``common.workload_facts.family_key``) as
  a hashed one-hot, log FLOPs (``estimate_tir_flops``), log bytes of its
  arguments, log arithmetic intensity (FLOPs per byte), and its anchor block's
  log spatial size (the output), log reduction size and iterator counts. Per-store
  features describe loops after scheduling; one model trained on many operators
  needs to know which operator a schedule belongs to, or the same tiling of a
  matmul and of a depthwise conv look alike.

Labels are ranks within a workload (``rank_labels``), never absolute seconds, so
a 10 µs kernel and a 10 ms one teach the same thing: which schedule is faster.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

N_STORE_FEATURES = 164
N_SCHEDULE_FEATURES = 2 * N_STORE_FEATURES + 1
FAMILY_BUCKETS = 16
"""Buckets of the family one-hot: a family's 64-bit key modulo this (collisions only blur, never break)."""
N_WORKLOAD_FEATURES = FAMILY_BUCKETS + 8
N_FEATURES = N_SCHEDULE_FEATURES + N_WORKLOAD_FEATURES
LAYOUT = "per-store sum+max+log1p(n) | family one-hot/16, log flops, bytes, intensity, anchor extents"
"""Stored in a model's meta: a booster trained on another layout is never loaded for this one."""


def pool(rows: np.ndarray) -> np.ndarray:
    """One candidate's ``(n_stores, 164)`` rows → a ``(N_SCHEDULE_FEATURES,)`` float32 vector."""
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[0] == 0:
        return np.zeros(N_SCHEDULE_FEATURES, dtype=np.float32)
    return np.concatenate([rows.sum(axis=0), rows.max(axis=0), [np.log1p(rows.shape[0])]]).astype(np.float32)


def _or_none(fn: Callable[[], Any], what: str) -> Any:
    """``fn()``, or None when TVM cannot read that part of the workload (logged; the rest still helps)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001  (odd PrimFuncs: no family, no FLOP estimate, no anchor block)
        log.debug("workload features: no %s (%s)", what, str(exc)[:200])
        return None


def _anchor(mod: Any) -> tuple[list[int], list[int]]:
    """(spatial extents, reduction extents) of the workload's anchor block."""
    from tvm.s_tir.analysis import find_anchor_sblock

    block = find_anchor_sblock(mod)
    kinds = [(int(iv.iter_type), int(iv.dom.extent)) for iv in block.iter_vars]
    return [e for k, e in kinds if k == 0], [e for k, e in kinds if k == 2]


def workload_features(mod: Any) -> np.ndarray:
    """The ``(N_WORKLOAD_FEATURES,)`` vector of a workload's IRModule; parts TVM cannot read stay 0."""
    from tvm.s_tir.analysis import estimate_tir_flops

    from common.tvm_json import args_info_json
    from common.workload_facts import argument_bytes, family_key

    out = np.zeros(N_WORKLOAD_FEATURES, dtype=np.float32)
    family = _or_none(lambda: family_key(mod), "family")
    if family is not None:
        out[int(family, 16) % FAMILY_BUCKETS] = 1.0
    flops = max(0.0, _or_none(lambda: float(estimate_tir_flops(mod)), "FLOP estimate") or 0.0)
    nbytes = _or_none(lambda: float(argument_bytes(args_info_json(mod))), "argument bytes") or 0.0
    at = FAMILY_BUCKETS
    out[at: at + 3] = [math.log1p(flops), math.log1p(nbytes), math.log1p(flops / nbytes) if nbytes else 0.0]
    anchor = _or_none(lambda: _anchor(mod), "anchor block")
    if anchor is not None:
        spatial, reduce = anchor
        out[at + 3: at + 7] = [math.log1p(math.prod(spatial)), math.log1p(math.prod(reduce)), len(spatial), len(reduce)]
    out[at + 7] = math.log1p(_or_none(lambda: _count_blocks(mod), "blocks") or 0)
    return out


def _count_blocks(mod: Any) -> int:
    """Blocks directly under the root block (the stages of the fused operator)."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    return len(sch.get_child_blocks(sch.get_sblock("root")))


def extract(context: Any, candidates: Sequence[Any], extractor: Any | None = None,
            workload: np.ndarray | None = None) -> np.ndarray:
    """``(len(candidates), N_FEATURES)`` features of MetaSchedule ``MeasureCandidate`` s of ``context.mod``.

    ``workload`` is ``workload_features(context.mod)`` when the caller has it already.
    """
    if not candidates:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    if extractor is None:
        from tvm.s_tir import meta_schedule as ms

        extractor = ms.feature_extractor.PerStoreFeature()
    wl = workload_features(context.mod) if workload is None else workload
    sched = np.stack([pool(f.numpy()) for f in extractor.extract_from(context, list(candidates))])
    return np.concatenate([sched, np.broadcast_to(wl, (len(sched), N_WORKLOAD_FEATURES))], axis=1).astype(np.float32)


def rank_labels(mean_secs: Sequence[float | None]) -> np.ndarray:
    """Per-workload labels in [0, 1]: 1 for the fastest, falling by rank; errors (None) 0, below every time.

    A valid candidate's label is ``1 - (rank / n_valid)`` with rank 0 for the
    fastest and ties sharing their mean rank, so the slowest valid one is still
    above every error. Only the order within one workload matters (the ranking
    objective compares labels within a group only).
    """
    out = np.zeros(len(mean_secs), dtype=np.float32)
    valid = [i for i, s in enumerate(mean_secs) if s]
    if not valid:
        return out
    secs = np.asarray([mean_secs[i] for i in valid], dtype=np.float64)
    order = np.argsort(secs, kind="stable")
    ranks = np.empty(len(secs), dtype=np.float64)
    ranks[order] = np.arange(len(secs))
    for value in np.unique(secs):  # ties share their mean rank
        tied = secs == value
        ranks[tied] = ranks[tied].mean()
    out[valid] = 1.0 - ranks / len(secs)
    return out
