"""User records: what ``tunehub.metaschedule.Database`` stores through the API (``db.user_records``).

Kept apart from the fleet's measurements and attributed to the caller's token.
Workloads are hashed here from their module, and a record's sort seconds and
validity are read from the record itself, so a client cannot mislabel either.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from common.errors import BadInput
from common.protocol import (
    UserRecordCount,
    UserRecordCreate,
    UserRecordCreated,
    UserRecordWire,
    UserWorkloadCreate,
    UserWorkloadCreated,
    UserWorkloadWire,
)
from db import user_records
from service.deps import CurrentToken, SessionDep, UserToken, pause_transaction

router = APIRouter(prefix="/records", tags=["records"])

TargetKey = Annotated[str, Query(max_length=1000, description="The canonical target key (common.targets).")]


@router.post("/workloads", status_code=201)
def add_workload(body: UserWorkloadCreate, session: SessionDep, token: UserToken) -> UserWorkloadCreated:
    """The workload's id; stored once by structural hash (422 for text that is not an IRModule)."""
    from common.tvm_json import args_info_json, workload_from_json, workload_hash

    pause_transaction(session)  # parsing the module is TVM work
    try:
        mod = workload_from_json(body.mod_json)
        shash = workload_hash(mod)
    except Exception as exc:  # noqa: BLE001  (TVM raises several kinds for bad text)
        raise BadInput(f"mod_json is not a TVM IRModule: {str(exc)[:300]}") from None
    try:
        args = args_info_json(mod)
    except Exception:  # noqa: BLE001  (no "main": records carry their own args_info)
        args = "[]"
    wid = user_records.add_user_workload(session, shash=shash, mod_json=body.mod_json, args_info_json=args,
                                         owner=f"token:{token.id}")
    return UserWorkloadCreated(workload_id=wid)


@router.get("/workloads")
def list_workloads(session: SessionDep, _: CurrentToken, after: int = 0) -> list[UserWorkloadWire]:
    """User-committed workloads with an id above ``after``, oldest first."""
    return [
        UserWorkloadWire(id=w.id, workload_id=w.workload_id, mod_json=w.mod_json)
        for w in user_records.user_workloads_after(session, after_id=after)
    ]


@router.post("", status_code=201)
def add_record(body: UserRecordCreate, session: SessionDep, token: UserToken) -> UserRecordCreated:
    """Store one record for a user-committed workload (422 for a record that is not TuningRecord JSON)."""
    try:
        rid = user_records.add_user_record(session, workload_id=body.workload_id, target_key=body.target_key,
                                           record_json=body.record_json, owner=f"token:{token.id}")
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return UserRecordCreated(id=rid)


def _wire(rows: list[user_records.StoredRecord]) -> list[UserRecordWire]:
    return [UserRecordWire(id=r.id, workload_id=r.workload_id, record_json=r.record_json) for r in rows]


@router.get("/top")
def top_records(
    session: SessionDep, _: CurrentToken, target_key: TargetKey,
    workload_ids: Annotated[list[int], Query(max_length=1024)], k: Annotated[int, Query(ge=0, le=10000)],
) -> list[UserRecordWire]:
    """The ``k`` best valid records of these workloads (MetaSchedule's order)."""
    return _wire(user_records.top_user_records(session, target_key=target_key, workload_ids=workload_ids, k=k))


@router.get("")
def all_records(session: SessionDep, _: CurrentToken, target_key: TargetKey | None = None) -> list[UserRecordWire]:
    """Every record (of one target key, or all), in MetaSchedule's order."""
    return _wire(user_records.all_user_records(session, target_key=target_key))


@router.get("/count")
def count_records(session: SessionDep, _: CurrentToken, target_key: TargetKey) -> UserRecordCount:
    return UserRecordCount(count=user_records.count_user_records(session, target_key=target_key))
