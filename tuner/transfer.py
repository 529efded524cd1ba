"""Schedules carried over between workloads of one family: ``family_key`` and ``adapt_trace``.

Why: MetaSchedule starts every new workload from random samples, even when the
fleet has tuned the same operator at other shapes (a matmul at 384 and 640
before one at 512, a model's dense layers at several widths). Loop order,
vectorisation, unrolling and the inner tile sizes that fit the registers and
caches carry over well between shapes; only the outer tile factors must change
so that the tiles still divide the new extents. So a new task's first batch
measures the best schedules of its family's other members, adapted, and the
evolutionary search then starts from whichever of them measured best (they are
in the database like any measurement).

A *family* is a workload's shape- and dtype-free skeleton: its blocks in order,
with each block's iterator kinds (spatial/reduce), how many buffers it reads
and writes and their ranks, and its loop depth. Two workloads of a family
usually accept each other's traces; ``adapt_trace`` checks that one does by
replaying it (with MetaSchedule's postprocessors, as for any candidate) and
returns None when it does not. ``carry_family_over`` does this for a job's task.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from common.workload_facts import family_key
from tuner.errors import TVM_ERRORS

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from db.job_claims import JobSpec
    from tuner.job_state import TunedTask

log = logging.getLogger(__name__)

UNKNOWN_FAMILY = "unknown"
"""The family stored for a workload whose skeleton cannot be read: it matches nothing real."""


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _nearest_divisor(factor: int, n: int, cap: int | None = None) -> int:
    """The divisor of ``n`` nearest ``factor`` in ratio (ties: the smaller), at most ``cap``."""
    options = [d for d in _divisors(n) if cap is None or d <= cap] or [1]
    return min(options, key=lambda d: (abs(math.log(d / factor)), d))


def fit_tile(factors: Sequence[int], extent: int, max_innermost: int | None = None) -> list[int]:
    """Tile ``factors`` (outermost first) changed as little as possible to multiply to ``extent``.

    From the innermost out, each factor is kept where it divides what is left of
    the extent, else replaced by the nearest divisor of it (a 20-wide tile of a
    640 loop becomes 16-wide on 512, not 4-wide: register blocking and cache
    footprint carry over); the outermost takes the rest. The innermost stays
    within MetaSchedule's ``max_innermost_factor``.
    """
    out = [1] * len(factors)
    rest = extent
    for i in range(len(factors) - 1, 0, -1):
        cap = max_innermost if (i == len(factors) - 1 and max_innermost and max_innermost > 0) else None
        out[i] = _nearest_divisor(max(1, int(factors[i])), rest, cap)
        rest //= out[i]
    out[0] = rest
    return out


def adapt_trace(src_mod: Any, trace_json: str, dst_mod: Any, postprocs: Sequence[Any]) -> Any | None:
    """``trace_json`` (a schedule of ``src_mod``) replayed on ``dst_mod`` with tiles refitted.

    Returns the new schedule (postprocessed, ready to measure) or None when the
    trace does not carry over.
    """
    import tvm
    from tvm import s_tir

    from common.tvm_json import apply_trace

    try:
        trace = apply_trace(src_mod, trace_json).trace
        dst = s_tir.Schedule(dst_mod)

        def refit(inst: Any, inputs: Any, attrs: Any, decision: Any) -> Any:
            if inst.kind.name != "SamplePerfectTile" or decision is None:
                return decision
            extent = dst.get(inputs[0]).extent
            if not isinstance(extent, tvm.tirx.IntImm):
                return decision
            max_innermost = int(attrs[1]) if len(attrs) > 1 else None
            return fit_tile([int(d) for d in decision], int(extent.value), max_innermost)

        trace.apply_to_schedule(dst, remove_postproc=True, decision_provider=refit)
        dst.enter_postproc()  # as MetaSchedule marks it, so replays can tell the postprocessing apart
        for postproc in postprocs:
            if not postproc.apply(dst):
                return None
        return dst
    except Exception as exc:  # noqa: BLE001  (any TVM error means: this trace does not fit here)
        log.debug("trace does not carry over: %s", str(exc)[:200])
        return None


def carry_family_over(factory: sessionmaker[Session], spec: JobSpec, task: TunedTask, *, limit: int,
                      learned_from: set[int], siblings: set[int]) -> None:
    """A workload new to the key: queue its family's best schedules, adapted, as its first batch.

    Called when the task's first batch is proposed, so a job's later tasks also
    start from its earlier tasks of the same family (a model's dense layers).
    Labels the key's measured workloads with their family first (lazily: that
    needs TVM). The shared cost model also learns from each member's
    measurements, once per job (``learned_from``; ``siblings``, the job's own
    workloads, feed it already). A TVM error never fails the job: without
    transfers the search starts from random samples, as MetaSchedule's does.
    """
    if limit <= 0:
        return
    from common.tvm_json import workload_from_json
    from db.engine import session_scope
    from db.families import family_bests, label, member_measurements, unlabelled
    from tuner.configs import current_tvm_version

    try:
        family = family_key(task.search.mod)
        with session_scope(factory) as session:
            todo = unlabelled(session, target_key=spec.target_key)
        keys = {task.spec.workload_id: family}
        for wid, mod_json in todo:
            try:
                keys[wid] = family_key(workload_from_json(mod_json))
            except TVM_ERRORS:  # a module we cannot read: never a family member
                keys[wid] = UNKNOWN_FAMILY
        with session_scope(factory) as session:
            label(session, keys)
            members = family_bests(session, family=family, target_key=spec.target_key,
                                   exclude_workload_id=task.spec.workload_id, flops=task.spec.flops,
                                   per_workload=limit, tvm_version=current_tvm_version())
        mods = {m.workload_id: workload_from_json(m.mod_json) for m in members}
        # Round-robin over members, best first: each member's best before any member's second.
        depth = max((len(m.traces) for m in members), default=0)
        sources = [(mods[m.workload_id], m.traces[i]) for i in range(depth) for m in members if i < len(m.traces)]
        added = task.search.add_transfers(sources, limit)
        learned = 0
        for m in members:
            if m.workload_id in learned_from or m.workload_id in siblings:
                continue
            learned_from.add(m.workload_id)
            with session_scope(factory) as session:
                measured = member_measurements(session, workload_id=m.workload_id, target_key=spec.target_key)
            learned += task.search.learn_from(mods[m.workload_id], measured)
    except TVM_ERRORS:
        log.exception("job %d task %s: carrying schedules over from its family failed; searching cold",
                      spec.id, task.spec.name)
        return
    if sources:
        log.info("job %d task %s: %d schedules carried over from %d workloads of its family (%d tried); "
                 "cost model trained on %d of their measurements",
                 spec.id, task.spec.name, added, len(members), len(sources), learned)
