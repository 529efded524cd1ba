"""A ``RecordStore`` over the service's HTTP API (``/api/v1/records``), with a user token.

Same calls as ``SqlRecordStore``; the service hashes workloads, reads each
record's validity from the record and attributes rows to the token.
"""

from __future__ import annotations

from common.client import TunehubClient
from db.user_records import StoredRecord, StoredWorkload


class HttpRecordStore:
    def __init__(self, server: str, *, token: str | None, timeout_s: float = 60.0) -> None:
        self._client = TunehubClient(server, token, timeout_s=timeout_s)

    def close(self) -> None:
        self._client.close()

    def add_workload(self, *, shash: str, mod_json: str, args_info_json: str) -> int:
        return self._client.add_user_workload(mod_json)

    def workloads_after(self, after_id: int) -> list[StoredWorkload]:
        return [StoredWorkload(id=w.id, workload_id=w.workload_id, mod_json=w.mod_json)
                for w in self._client.user_workloads(after_id)]

    def add_record(self, *, workload_id: int, target_key: str, record_json: str) -> int:
        return self._client.add_user_record(workload_id, target_key, record_json)

    def _stored(self, rows: list) -> list[StoredRecord]:  # type: ignore[type-arg]
        return [StoredRecord(id=r.id, workload_id=r.workload_id, record_json=r.record_json) for r in rows]

    def top(self, *, target_key: str, workload_ids: list[int], k: int) -> list[StoredRecord]:
        return self._stored(self._client.top_user_records(target_key, workload_ids, k))

    def all(self, *, target_key: str) -> list[StoredRecord]:
        return self._stored(self._client.user_records(target_key))

    def count(self, *, target_key: str) -> int:
        return self._client.count_user_records(target_key)
