"""tunehub inside a TVM user's own MetaSchedule script: ``Database``.

``Database(url, target=...)`` is a MetaSchedule ``Database`` (a ``PyDatabase``)
whose workloads and records live in tunehub's database, so anything that takes
a MetaSchedule database (``ms.tune_tir``, ``compile_tir``, ``Union`` /
``OrderedUnion`` / ``ScheduleFnDatabase``) works with it, and a second
instance (another process, another machine) sees what the first committed.
It answers every call as ``JSONDatabase`` does (TVM_NOTES §12): workloads match
by ``module_equality``; ``get_top_k`` returns valid records only
(``TuningRecord::IsValid``) ordered by mean run seconds, ties in commit order;
``get_all_tuning_records`` lists every record in that order. One difference:
an instance serves one target (records committed for another target are
stored under theirs and not listed here).

User records are attributed to ``owner`` and kept apart from the fleet's
measurements (``db.user_records``): they never become the fleet's served best.
"""

from __future__ import annotations

import getpass
import json
import logging
import socket
import threading
from typing import Any, ClassVar

from sqlalchemy.orm import Session, sessionmaker
from tvm.ir import IRModule
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.database import PyDatabase
from tvm.s_tir.meta_schedule.database.database import _PyDatabase
from tvm.target import Target

from common.targets import canonical_target
from common.tvm_json import (
    args_info_json,
    workload_from_json,
    workload_hash,
    workload_to_json,
)
from db.user_records import StoredRecord
from tunehub.record_store import RecordStore, SqlRecordStore

log = logging.getLogger(__name__)

def _plain(obj: Any) -> Any:
    """IntImm/FloatImm inside ``as_json()`` carry ``.value``; plain json cannot (TVM_NOTES §5)."""
    value = getattr(obj, "value", None)
    return value if value is not None else str(obj)


def default_owner() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


class _PyDatabaseOfEquality(_PyDatabase):
    """TVM's ``_PyDatabase`` taking ``module_equality`` first, so ``derived_object`` can pass it as a field."""

    def __init__(self, module_equality: str, *methods: Any) -> None:
        super().__init__(*methods, module_equality=module_equality)


class _PyDatabaseWithEquality(PyDatabase):
    """``PyDatabase`` whose C++ side learns the ``module_equality`` (TVM's own passes none: always "structural")."""

    _tvm_metadata: ClassVar[dict[str, Any]] = {
        "cls": _PyDatabaseOfEquality,
        "fields": ["module_equality"],
        "methods": PyDatabase._tvm_metadata["methods"],
    }


@derived_object
class Database(_PyDatabaseWithEquality):
    """A MetaSchedule database on tunehub: a database URL or session factory (or a ``RecordStore``).

    ``module_equality`` is "structural", "ignore-tensor" or "anchor-block", as
    for ``JSONDatabase``. ``owner`` is recorded with every commit (default
    ``user@host``). Reads first pull workloads committed elsewhere since the
    last read, so instances on the same storage agree.
    """

    def __init__(
        self,
        url_or_server: str | sessionmaker[Session] | RecordStore,
        *,
        target: Target | dict[str, Any] | str,
        module_equality: str = "structural",
        token: str | None = None,
        owner: str | None = None,
    ) -> None:
        self.module_equality = module_equality
        self._store = _open_store(url_or_server, token=token, owner=owner or default_owner())
        target_dict = target.export() if isinstance(target, Target) else target
        self._target = Target(json.loads(target_dict) if isinstance(target_dict, str) else target_dict)
        self._target_key = canonical_target(self._target.export())[1]
        self._keys: dict[str, str] = {str(self._target): self._target_key}
        # In-process index with TVM's own workload equality; rows grouped by the canonical (first stored) workload.
        self._index = ms.database.MemoryDatabase(module_equality=module_equality)
        self._groups: dict[str, list[int]] = {}  # structural hash of the canonical mod -> workload row ids
        self._workloads: dict[int, Any] = {}  # workload row id -> ms.database.Workload
        self._cursor = 0
        self._records: dict[int, Any] = {}  # record id -> TuningRecord (immutable, so cached)
        self._lock = threading.RLock()

    @property
    def target_key(self) -> str:
        return self._target_key

    # --- workloads --------------------------------------------------------

    def _sync(self) -> None:
        """Index the user workloads stored since the last call (by any instance)."""
        with self._lock:
            for row in self._store.workloads_after(self._cursor):
                mod = workload_from_json(row.mod_json)
                canon = self._index.commit_workload(mod)
                self._groups.setdefault(workload_hash(canon.mod), []).append(row.workload_id)
                self._workloads[row.workload_id] = ms.database.Workload(mod)
                self._cursor = row.id

    def _rows_of(self, mod: IRModule) -> list[int] | None:
        """Row ids of the workloads equal to ``mod`` (canonical first), or None when none is stored."""
        self._sync()
        with self._lock:
            if not self._index.has_workload(mod):
                return None
            return self._groups[workload_hash(self._index.commit_workload(mod).mod)]

    def has_workload(self, mod: IRModule) -> bool:
        return self._rows_of(mod) is not None

    def commit_workload(self, mod: IRModule) -> Any:
        """The stored workload equal to ``mod`` (``module_equality``); stores ``mod`` when none is."""
        if self._rows_of(mod) is None:
            self._store.add_workload(shash=workload_hash(mod), mod_json=workload_to_json(mod), args_info_json=_args(mod))
            self._sync()
        with self._lock:
            return self._index.commit_workload(mod)

    # --- records ----------------------------------------------------------

    def _key_of(self, target: Target) -> str:
        text = str(target)
        if text not in self._keys:
            self._keys[text] = canonical_target(target.export())[1]
        return self._keys[text]

    def commit_tuning_record(self, record: Any) -> None:
        rows = self._rows_of(record.workload.mod)
        if rows is None:
            self.commit_workload(record.workload.mod)
            rows = self._rows_of(record.workload.mod)
        assert rows is not None
        self._store.add_record(
            workload_id=rows[0],
            target_key=self._key_of(record.target),
            record_json=json.dumps(record.as_json(), default=_plain, separators=(",", ":")),
        )

    def _record(self, stored: StoredRecord) -> Any | None:
        with self._lock:
            cached = self._records.get(stored.id)
        if cached is not None:
            return cached
        if stored.workload_id not in self._workloads:
            self._sync()
        try:
            record = ms.database.TuningRecord.from_json(json.loads(stored.record_json), self._workloads[stored.workload_id])
        except Exception as exc:  # noqa: BLE001  (a record that no longer replays is skipped, as JSONDatabase does)
            log.warning("user record %d does not load, skipped: %s", stored.id, str(exc)[:300])
            return None
        with self._lock:
            self._records[stored.id] = record
        return record

    def _records_of(self, stored: list[StoredRecord]) -> list[Any]:
        return [r for r in map(self._record, stored) if r is not None]

    def get_top_k(self, workload: Any, top_k: int) -> list[Any]:
        if top_k < 0:
            raise ValueError(f"top_k must be non-negative, got {top_k}")
        rows = self._rows_of(workload.mod)
        if rows is None or top_k == 0:
            return []
        return self._records_of(self._store.top(target_key=self._target_key, workload_ids=rows, k=top_k))

    def get_all_tuning_records(self) -> list[Any]:
        return self._records_of(self._store.all(target_key=self._target_key))

    def __len__(self) -> int:
        return self._store.count(target_key=self._target_key)


def _args(mod: IRModule) -> str:
    try:
        return args_info_json(mod)
    except Exception:  # noqa: BLE001  (a module without "main": records carry their own args_info)
        return "[]"


def _open_store(url_or_server: str | sessionmaker[Session] | RecordStore, *, token: str | None, owner: str) -> RecordStore:
    if isinstance(url_or_server, str) and url_or_server.startswith(("http://", "https://")):
        from tunehub.http_record_store import HttpRecordStore

        return HttpRecordStore(url_or_server, token=token)
    if isinstance(url_or_server, (str, sessionmaker)):
        return SqlRecordStore(url_or_server, owner=owner)
    return url_or_server


from tunehub.fleet_runner import FleetBuilder, FleetRunner

__all__ = ["Database", "FleetBuilder", "FleetRunner"]
