"""Measurements made under another TVM version stay out of every "best" asked for the current one.

Rows are stamped with the measuring worker's TVM version (``measurements.tvm_version``);
rows stored before versions were kept (NULL) count as any version. Without a
version asked for, the policy is unchanged.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from common.protocol import JobStatus
from db import ranking
from db.engine import session_scope
from db.families import family_bests
from db.job_claims import fleet_best, tuned_workloads
from factories import add_job, add_measurement, add_task, add_worker, add_workload

CURRENT, OTHER = "0.27.0.post1", "0.19.0"


def test_other_versions_stay_out_when_a_version_is_asked(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        wl = add_workload(s, family="famv", flops=100.0)
        sibling = add_workload(s, family="famv", flops=100.0)
        done = add_job(s, status=JobStatus.done)
        key = done.target_key
        task, sib_task = add_task(s, job=done, workload=wl), add_task(s, job=done, workload=sibling, name="sib")
        worker = add_worker(s, target_key=key)
        ours = add_measurement(s, task=task, worker=worker, trace_json='["ours"]', run_secs=[3e-4])
        other = add_measurement(s, task=task, worker=worker, trace_json='["other"]', run_secs=[1e-4])
        old = add_measurement(s, task=sib_task, worker=worker, trace_json='["unstamped"]', run_secs=[2e-4])
        ours.tvm_version, other.tvm_version = CURRENT, OTHER  # old stays NULL: stored before versions were kept
        later = add_job(s, status=JobStatus.running, key=key)
        ids = (wl.id, sibling.id, later.id, ours.id, other.id, old.id)
    wl_id, sib_id, later_id, ours_id, other_id, old_id = ids

    with session_scope(session_factory) as s:
        def best(version: str | None) -> dict[int, int]:
            ranked = ranking.ranked_measurements(s, target_key=key, workload_ids=[wl_id, sib_id], tvm_version=version)
            return {w: ms[0].measurement_id for w, ms in ranked.items()}

        assert best(None) == {wl_id: other_id, sib_id: old_id}  # unchanged without a version
        assert best(CURRENT) == {wl_id: ours_id, sib_id: old_id}
        assert best(OTHER) == {wl_id: other_id, sib_id: old_id}
        (record,) = [r for r in ranking.best_records(s, target_key=key, workload_ids=[wl_id], tvm_version=CURRENT)]
        assert record.measurement_id == ours_id and record.mean_secs == 3e-4
        warm = fleet_best(s, workload_id=wl_id, target_key=key, exclude_task_id=-1, limit=8, tvm_version=CURRENT)
        assert [c.trace_json for c in warm] == ['["ours"]']
        tuned = tuned_workloads(s, workload_ids=[wl_id], target_key=key, exclude_job_id=later_id, tvm_version=CURRENT)
        assert tuned == {wl_id: 3e-4}
        members = family_bests(s, family="famv", target_key=key, exclude_workload_id=sib_id, flops=100.0,
                               tvm_version=CURRENT)
        assert [m.traces for m in members] == [['["ours"]']]
