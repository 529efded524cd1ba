"""The wire view of a lease: ``db.queue`` claims candidates, this describes them for a worker.

Each distinct workload's IRModule travels once per batch, and workload rows are
cached per engine (they never change once stored).
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.protocol import CandidateWire, LeaseResponse
from db import queue
from db.engine import as_utc
from db.models import Workload
from db.records import WorkerRecord


def lease_batch(session: Session, *, worker: WorkerRecord, max_count: int, ttl_s: float) -> LeaseResponse:
    """Lease candidates for the worker's target and describe them for the wire.

    Each distinct workload's IRModule travels once per batch (``workloads``),
    not once per candidate: it is ~20× the size of a trace (TVM_NOTES §5).
    """
    lease, cands = queue.lease_candidates(
        session,
        worker_id=worker.id,
        target_key=worker.target_key,
        max_count=max_count,
        ttl_s=ttl_s,
        seen_at=worker.last_seen_at,
        confirmer=worker.suspect_reason is None and not worker.emulated,  # emulated times confirm nothing
    )
    target = worker.target
    if lease is None:
        return LeaseResponse(lease_id=None, ttl_s=ttl_s, target=target)
    wls = _wire_workloads(session, {c.workload_id for c in cands})
    return LeaseResponse(
        lease_id=lease.id,
        expires_at=as_utc(lease.expires_at),
        ttl_s=ttl_s,
        target=target,
        candidates=[
            CandidateWire(
                id=c.id,
                workload_hash=wls[c.workload_id].shash,
                trace=json.loads(c.trace_json),
                args_info=wls[c.workload_id].args_info,
            )
            for c in cands
        ],
        workloads={w.shash: w.mod_json for w in wls.values()},
    )


@dataclass(frozen=True)
class _WireWorkload:
    shash: str
    mod_json: str
    args_info: Any


# Per engine (so per database): {workload id: what a lease sends of it}. A workload row
# never changes once stored (upsert_workloads only inserts), so this saves a query and
# tens of KB of IRModule JSON per lease. Bounded; dropped with its engine.
_WORKLOAD_CACHE: weakref.WeakKeyDictionary[Any, OrderedDict[int, _WireWorkload]] = weakref.WeakKeyDictionary()
_WORKLOAD_CACHE_SIZE = 512
_WORKLOAD_CACHE_LOCK = threading.Lock()


def _wire_workloads(session: Session, ids: set[int]) -> dict[int, _WireWorkload]:
    engine = session.get_bind()
    with _WORKLOAD_CACHE_LOCK:
        cache = _WORKLOAD_CACHE.setdefault(engine, OrderedDict())
        found = {wid: cache[wid] for wid in ids if wid in cache}
    missing = ids - found.keys()
    if missing:
        rows = session.execute(
            select(Workload.id, Workload.shash, Workload.mod_json, Workload.args_info_json).where(
                Workload.id.in_(missing)
            )
        )
        loaded = {r.id: _WireWorkload(r.shash, r.mod_json, json.loads(r.args_info_json)) for r in rows}
        found.update(loaded)
        with _WORKLOAD_CACHE_LOCK:
            cache.update(loaded)
            while len(cache) > _WORKLOAD_CACHE_SIZE:
                cache.popitem(last=False)
    return found

