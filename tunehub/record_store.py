"""Where ``tunehub.metaschedule.Database`` keeps user records: the ``RecordStore`` seam and its SQL store.

The Database keeps MetaSchedule's semantics (workload equality, record
objects) in the user's process; a store only persists rows and answers the few
indexed reads the Database needs. ``SqlRecordStore`` talks to a tunehub
database URL directly (SQLite or PostgreSQL); an HTTP store would send the same
calls to the service with a token.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_sessionmaker, session_scope
from db.user_records import (
    StoredRecord,
    StoredWorkload,
    add_user_record,
    add_user_workload,
    all_user_records,
    count_user_records,
    top_user_records,
    user_workloads_after,
)


class RecordStore(Protocol):
    """Persistence of user-committed workloads and records (rows only; no TVM objects)."""

    def add_workload(self, *, shash: str, mod_json: str, args_info_json: str) -> int: ...

    def workloads_after(self, after_id: int) -> list[StoredWorkload]: ...

    def add_record(self, *, workload_id: int, target_key: str, record_json: str) -> int: ...

    def top(self, *, target_key: str, workload_ids: list[int], k: int) -> list[StoredRecord]: ...

    def all(self, *, target_key: str) -> list[StoredRecord]: ...

    def count(self, *, target_key: str) -> int: ...


class SqlRecordStore:
    """A ``RecordStore`` on a tunehub database (URL or session factory); ``owner`` is written on every row."""

    def __init__(self, url_or_factory: str | sessionmaker[Session], *, owner: str) -> None:
        if isinstance(url_or_factory, str):
            self._engine = make_engine(url_or_factory, pool_size=2, max_overflow=2)
            self._factory = make_sessionmaker(self._engine)
        else:
            self._engine = None
            self._factory = url_or_factory
        self.owner = owner

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def add_workload(self, *, shash: str, mod_json: str, args_info_json: str) -> int:
        with session_scope(self._factory) as s:
            return add_user_workload(s, shash=shash, mod_json=mod_json, args_info_json=args_info_json, owner=self.owner)

    def workloads_after(self, after_id: int) -> list[StoredWorkload]:
        with session_scope(self._factory) as s:
            return user_workloads_after(s, after_id=after_id)

    def add_record(self, *, workload_id: int, target_key: str, record_json: str) -> int:
        with session_scope(self._factory) as s:
            return add_user_record(s, workload_id=workload_id, target_key=target_key, record_json=record_json,
                                   owner=self.owner)

    def top(self, *, target_key: str, workload_ids: list[int], k: int) -> list[StoredRecord]:
        with session_scope(self._factory) as s:
            return top_user_records(s, target_key=target_key, workload_ids=workload_ids, k=k)

    def all(self, *, target_key: str) -> list[StoredRecord]:
        with session_scope(self._factory) as s:
            return all_user_records(s, target_key=target_key)

    def count(self, *, target_key: str) -> int:
        with session_scope(self._factory) as s:
            return count_user_records(s, target_key=target_key)
