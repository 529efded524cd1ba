"""A MetaSchedule ``Database`` that reads tunehub's SQL tables: ``SqlDatabase``.

Why a read-through ``PyDatabase`` rather than a ``MemoryDatabase`` hydrated at
start: the tables already are the record of every measurement (workers' reports
land there through ``db.queue.complete``), so a second copy in memory could only
lag behind it. Read through, the search sees at every round what the whole
fleet has measured for the same (workload, target key): a job resumed after a
restart, a later job, or another job running at the same time on the same
workload all start their population from the current best, and nothing has to
be fed in twice. The price is one indexed query per search round (plus trace
replays, cached per candidate), which is small beside a round's generation.

What MetaSchedule's ``EvolutionarySearch`` (TVM 0.27,
``src/s_tir/meta_schedule/search_strategy/evolutionary_search.cc``) calls on
its database: ``GetModuleEquality()`` (the ``module_equality`` given to the
``PyDatabase`` constructor, "structural") and ``CommitWorkload(mod)`` once in
``PreTuning``; ``GetTopK(workload, population_size * init_measured_ratio)`` in
every ``GenerateMeasureCandidates`` (the measured seeds of the initial
population). Nothing else: it never commits records (``tune_tir``'s measure
callback does) and it only remembers what it proposed itself, so resumes are
deduplicated in ``tuner.search``.

A read-only view: the fleet's records are written by the workers' reports
(``db.queue.complete``), after the plausibility and confirmation checks, and
by nothing else, so ``commit_tuning_record`` raises ``TypeError`` naming the
database that does store commits, ``tunehub.metaschedule.Database`` (a TVM
user's records, attributed and kept apart from the fleet's). Storing a
commit here as a user record instead would break TVM's contract the other
way: it would not be read back by this view, which must show the fleet's
measurements only. ``read_only`` tells ``tuner.search`` not to feed back what
the workers already stored. ``query_tuning_record`` / ``query_schedule`` /
``query_ir_module`` fall back to TVM's defaults, which use ``has_workload``,
``commit_workload`` and ``get_top_k``, so
``ms.tir_integration.compile_tir(SqlDatabase(...), ...)`` works too.
``get_top_k`` is ``db.ranking``'s order (TVM's validity rule and mean order,
flagged and pending results last); ``get_all_tuning_records`` and ``len``
cover the fleet's measurements of the key, ad-hoc runs of users' scripts
(``db.adhoc_runs``) left out.

One instance serves one target key (measurements compare only within a key)
and any number of workloads. Each method opens its own short session.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from tvm.ir import IRModule
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.database import PyDatabase
from tvm.target import Target

from db.adhoc_runs import adhoc_candidate
from db.engine import db_now, session_scope
from db.models import Candidate, Measurement, Workload
from db.ranking import FAILED_STUB_SECS, ranked_measurements
from common.tvm_json import apply_trace, args_info_json, workload_hash, workload_to_json

log = logging.getLogger(__name__)


@dataclass
class _Known:
    """A workload row as the database has it, with its MetaSchedule objects."""

    id: int
    ms_workload: Any  # ms.database.Workload
    args_info: list[Any]  # ms.arg_info.ArgInfo


@derived_object
class SqlDatabase(PyDatabase):
    """MetaSchedule records = tunehub measurements ⋈ candidates for one target key.

    ``get_top_k`` returns a workload's best measurements by the one ranking
    policy (``db.ranking``: TVM's validity rule, unflagged and settled first,
    then mean seconds); errors never appear there but are listed by
    ``get_all_tuning_records`` with ``run_secs=None``.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        target: dict[str, Any] | str,
        target_key: str,
        tvm_version: str | None = None,
        trace_cache_size: int = 2048,
    ) -> None:
        """``tvm_version``: ``get_top_k`` ranks only measurements by workers of that TVM version
        (and unstamped older rows), as bundles do; None ranks every version."""
        super().__init__()
        self._tvm_version = tvm_version
        self._factory = session_factory
        self._target = Target(json.loads(target) if isinstance(target, str) else target)
        self._target_key = target_key
        self._by_hash: dict[str, _Known] = {}
        self._by_id: dict[int, _Known] = {}
        self._traces: OrderedDict[int, Any] = OrderedDict()  # candidate id -> Trace
        self._cache_size = trace_cache_size
        self._lock = threading.Lock()

    # --- workloads --------------------------------------------------------

    def _remember(self, row_id: int, mod: IRModule) -> _Known:
        known = _Known(
            id=row_id,
            ms_workload=ms.database.Workload(mod),
            args_info=list(ms.arg_info.ArgInfo.from_entry_func(mod, remove_preproc=True)),
        )
        with self._lock:
            self._by_hash[workload_hash(mod)] = known
            self._by_id[row_id] = known
        return known

    def _lookup(self, mod: IRModule) -> _Known | None:
        shash = workload_hash(mod)
        with self._lock:
            known = self._by_hash.get(shash)
        if known is not None:
            return known
        with session_scope(self._factory) as session:
            row_id = session.scalar(select(Workload.id).where(Workload.shash == shash))
        return None if row_id is None else self._remember(row_id, mod)

    def _by_row(self, row_id: int) -> _Known:
        with self._lock:
            known = self._by_id.get(row_id)
        if known is not None:
            return known
        from common.tvm_json import workload_from_json

        with session_scope(self._factory) as session:
            mod_json = session.scalar(select(Workload.mod_json).where(Workload.id == row_id))
        return self._remember(row_id, workload_from_json(mod_json))

    def has_workload(self, mod: IRModule) -> bool:
        return self._lookup(mod) is not None

    def commit_workload(self, mod: IRModule) -> Any:
        """The workload's MetaSchedule ``Workload``; inserts the row when it is new."""
        known = self._lookup(mod)
        if known is not None:
            return known.ms_workload
        shash = workload_hash(mod)
        try:
            with session_scope(self._factory) as session:
                row = Workload(
                    shash=shash,
                    mod_json=workload_to_json(mod),
                    args_info_json=args_info_json(mod),
                    flops=None,
                    created_at=db_now(session),
                )
                session.add(row)
                session.flush()
                row_id = row.id
        except IntegrityError:  # another process inserted it first
            with session_scope(self._factory) as session:
                row_id = session.scalar(select(Workload.id).where(Workload.shash == shash))
        return self._remember(row_id, mod).ms_workload

    # --- records ----------------------------------------------------------

    read_only: ClassVar[bool] = True
    """Records come from the workers' reports only; ``commit_tuning_record`` refuses."""

    def commit_tuning_record(self, record: Any) -> None:
        """Refused: this is the fleet's read-only view (see the module docstring)."""
        raise TypeError(
            "db.ms_database.SqlDatabase is the fleet's read-only view: its records are the workers' measurements. "
            "To commit records from a MetaSchedule script use tunehub.metaschedule.Database(url_or_server, target=...)"
        )

    def _trace(self, candidate_id: int, known: _Known, trace_json: str) -> Any | None:
        with self._lock:
            trace = self._traces.get(candidate_id)
            if trace is not None:
                self._traces.move_to_end(candidate_id)
                return trace
        try:
            trace = apply_trace(known.ms_workload.mod, trace_json).trace
        except Exception as exc:  # noqa: BLE001  (a trace that no longer replays is skipped, not fatal)
            log.warning("candidate %d: stored trace does not replay, skipped: %s", candidate_id, str(exc)[:300])
            return None
        with self._lock:
            self._traces[candidate_id] = trace
            while len(self._traces) > self._cache_size:
                self._traces.popitem(last=False)
        return trace

    def _record(self, known: _Known, candidate_id: int, trace_json: str, run_secs: list[float] | None) -> Any | None:
        trace = self._trace(candidate_id, known, trace_json)
        if trace is None:
            return None
        return ms.database.TuningRecord(trace, known.ms_workload, run_secs, self._target, known.args_info)

    def get_top_k(self, workload: Any, top_k: int) -> list[Any]:
        if top_k <= 0:
            return []
        known = self._lookup(workload.mod)
        if known is None:
            return []
        with session_scope(self._factory) as session:
            ranked = ranked_measurements(
                session, target_key=self._target_key, workload_ids=[known.id], per_workload=top_k,
                tvm_version=self._tvm_version,
            ).get(known.id, [])
        records = [self._record(known, m.candidate_id, m.trace_json, list(m.run_secs)) for m in ranked]
        return [r for r in records if r is not None]

    def get_all_tuning_records(self) -> list[Any]:
        """Every measurement of this target key, errors included (``run_secs=None``), in ``JSONDatabase``'s order.

        That order is TVM's ``SortTuningRecordByMeanRunSecs`` (mean seconds, 1e10
        for none), ties in commit order. Replays every trace.
        """
        with session_scope(self._factory) as session:
            rows = session.execute(
                select(Measurement.workload_id, Measurement.candidate_id, Candidate.trace_json, Measurement.run_secs_json)
                .join(Candidate, Candidate.id == Measurement.candidate_id)
                .where(Measurement.target_key == self._target_key, ~adhoc_candidate())
                .order_by(func.coalesce(Measurement.mean_secs, FAILED_STUB_SECS), Measurement.id)
            ).all()
        records = [
            self._record(self._by_row(wid), cid, trace_json, [float(s) for s in json.loads(secs)] if secs else None)
            for wid, cid, trace_json, secs in rows
        ]
        return [r for r in records if r is not None]

    def __len__(self) -> int:
        with session_scope(self._factory) as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Measurement)
                    .join(Candidate, Candidate.id == Measurement.candidate_id)
                    .where(Measurement.target_key == self._target_key, ~adhoc_candidate())
                )
                or 0
            )
