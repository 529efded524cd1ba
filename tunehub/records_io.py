"""Moving records between a MetaSchedule JSON database (a work dir) and tunehub's user records.

``import_workdir`` loads a user's ``JSONDatabase`` (``database_workload.json``
and ``database_tuning_record.json``) into a ``tunehub.metaschedule.Database``
for one target; ``export_workdir`` writes a subset back as a ``JSONDatabase``
that ``ms.database.JSONDatabase(work_dir=...)`` (and ``compile_tir`` /
``compile_relax``) reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvm.s_tir import meta_schedule as ms


@dataclass(frozen=True)
class Moved:
    workloads: int
    records: int


def import_workdir(work_dir: Path, db: Any, *, target: Any | None = None) -> Moved:
    """Commit every workload and record of the JSON database in ``work_dir`` to ``db``.

    ``target`` (a ``tvm.target.Target``) replaces each record's own target, so
    the records land under the database's target key; None keeps theirs.
    """
    source = ms.database.JSONDatabase(work_dir=str(work_dir), allow_missing=False)
    records = source.get_all_tuning_records()
    workloads = {}
    for rec in records:
        key = _workload_key(rec.workload.mod)
        if key not in workloads:
            workloads[key] = db.commit_workload(rec.workload.mod)
        db.commit_tuning_record(ms.database.TuningRecord(
            rec.trace, workloads[key], rec.run_secs, target or rec.target, rec.args_info,
        ))
    return Moved(workloads=len(workloads), records=len(records))


def export_workdir(db: Any, out: Path, *, top_k: int | None = None) -> Moved:
    """Write ``db``'s records into a new JSON database under ``out``: all of them, or the ``top_k`` best per workload."""
    out.mkdir(parents=True, exist_ok=True)
    dest = ms.database.JSONDatabase(work_dir=str(out))
    records = db.get_all_tuning_records()
    seen: dict[int, Any] = {}
    written = 0
    for rec in records:
        key = _workload_key(rec.workload.mod)
        if key not in seen:
            seen[key] = dest.commit_workload(rec.workload.mod)
            if top_k is not None:
                for best in db.get_top_k(db.commit_workload(rec.workload.mod), top_k):
                    dest.commit_tuning_record(_rebind(best, seen[key]))
                    written += 1
        if top_k is None:
            dest.commit_tuning_record(_rebind(rec, seen[key]))
            written += 1
    return Moved(workloads=len(seen), records=written)


def _workload_key(mod: Any) -> int:
    import tvm_ffi

    return int(tvm_ffi.structural_hash(mod))


def _rebind(rec: Any, workload: Any) -> Any:
    return ms.database.TuningRecord(rec.trace, workload, rec.run_secs, rec.target, rec.args_info)
