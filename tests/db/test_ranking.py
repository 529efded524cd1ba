"""The one ranking policy (``db.ranking``) and every "best" built on it, on SQLite and PostgreSQL.

One workload measured with a flagged faster result, TVM's 1e10 failed stub, a
result with an empty trace, an error, two tied results and a slower one; each
consumer (config download, fleet warm start, 0-trial answers, family transfer,
cost-model labels) must see the same order.
"""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.protocol import JobStatus
from db import ranking
from db.engine import session_scope
from db.families import family_bests
from db.job_claims import fleet_best, tuned_workloads
from db.training_data import workload_bests
from factories import add_job, add_measurement, add_task, add_worker, add_workload


def test_one_policy_everywhere(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        wl = add_workload(s, family="fam", flops=100.0)
        sibling = add_workload(s, family="fam", flops=200.0)
        done = add_job(s, status=JobStatus.done)
        key = done.target_key
        running = add_job(s, model=None, status=JobStatus.running)
        task, other = add_task(s, job=done, workload=wl), add_task(s, job=running, workload=wl)
        worker = add_worker(s, target_key=key)
        m = {
            name: add_measurement(s, task=task, worker=worker, trace_json=trace, run_secs=secs, error=err,
                                  flagged=flagged)
            for name, trace, secs, err, flagged in [
                ("slow", '["slow"]', [3e-4], None, False),
                ("flagged_fast", '["flagged"]', [1e-4], None, True),
                ("stub", '["stub"]', [1e10, 1e10], None, False),
                ("empty_trace", "", [5e-5], None, False),
                # TuningRecord::IsValid: no instruction before EnterPostproc is no record (an ad-hoc run's trace)
                ("no_instruction", "[[],[]]", [4e-5], None, False),
                ("no_instruction_spaced", "[[ ], [ ]]", [4e-5], None, False),
                ("postproc_only", '[[["EnterPostproc",[],[],[]]],[]]', [4e-5], None, False),
                # ... and run_secs count unless every one is the 1e10 stub: ranked by their mean
                ("partial_stub", '["partial"]', [1e10, 1e-3], None, False),
                ("error", '["err"]', None, "crash", False),
                ("best", '["best"]', [2e-4, 2e-4], None, False),
                ("tie", '["tie"]', [2e-4], None, False),  # same mean as "best", later id
            ]
        }
        own = add_measurement(s, task=other, worker=worker, trace_json='["own"]', run_secs=[1e-6])
        sibling_task = add_task(s, job=done, workload=sibling)
        only_flagged = add_measurement(s, task=sibling_task, worker=worker, trace_json='["sib"]', run_secs=[1e-5],
                                       flagged=True)
        ids = dict(wl=wl.id, sibling=sibling.id, task=task.id, other=other.id, running=running.id, done=done.id,
                   sibling_task=sibling_task.id)

    with session_scope(session_factory) as s:
        ranked = ranking.ranked_measurements(s, target_key=key, workload_ids=[ids["wl"]], per_workload=10,
                                             exclude_task_id=ids["other"])[ids["wl"]]
        order = ["best", "tie", "slow", "partial_stub", "flagged_fast"]  # no stub, no empty trace, no error
        assert [r.candidate_id for r in ranked] == [m[n].candidate_id for n in order]
        assert [r.rank for r in ranked] == [1, 2, 3, 4, 5] and ranked[-1].flagged
        assert ranked[0].run_secs == (2e-4, 2e-4)

        # Config download: the best, and a flagged result where nothing else is valid.
        recs = ranking.best_records(s, target_key=key, workload_ids=[ids["sibling"], ids["wl"]])
        assert [(r.workload_id, r.candidate_id) for r in recs] == sorted(
            [(ids["wl"], own.candidate_id), (ids["sibling"], only_flagged.candidate_id)])
        # Fleet warm start: other tasks' results, in policy order.
        fleet = fleet_best(s, workload_id=ids["wl"], target_key=key, exclude_task_id=ids["other"], limit=3)
        assert [f.candidate_id for f in fleet] == [m[n].candidate_id for n in order[:3]]
        # 0-trial answers: only finished jobs count (the running job's faster result does not).
        assert tuned_workloads(s, workload_ids=[ids["wl"]], target_key=key, exclude_job_id=ids["running"]) == {
            ids["wl"]: 2e-4}
        assert tuned_workloads(s, workload_ids=[ids["wl"]], target_key=key, exclude_job_id=ids["done"]) == {}
        # Cost-model labels: valid and unflagged only.
        assert workload_bests(s, target_key=key, workload_ids=[ids["wl"], ids["sibling"]]) == {ids["wl"]: 1e-6}
        # Family transfer: the sibling's traces as the policy orders them.
        members = family_bests(s, family="fam", target_key=key, exclude_workload_id=ids["sibling"], flops=200.0,
                               per_workload=3)
        assert [(mb.workload_id, mb.traces) for mb in members] == [(ids["wl"], ['["own"]', '["best"]', '["tie"]'])]
        # A job's progress per task: the same order over the task's own measurements (not the faster
        # flagged one, not the invalid ones), a flagged one where nothing else is valid.
        assert ranking.task_bests(s, task_ids=[ids["task"], ids["other"], ids["sibling_task"]]) == {
            ids["task"]: 2e-4, ids["other"]: 1e-6, ids["sibling_task"]: 1e-5}
        assert ranking.ranked_measurements(s, target_key="other", workload_ids=[ids["wl"]]) == {}
        assert ranking.ranked_measurements(s, target_key=key, workload_ids=[]) == {}


@pytest.mark.parametrize(
    ("run_secs", "kinds", "valid"),
    [
        ([1e-3], ["GetSBlock"], True),
        ([1e10, 1e-3], ["GetSBlock", "EnterPostproc"], True),
        ([2e10], ["GetSBlock"], True),  # above the stub, not it
        ([1e10, 1e10], ["GetSBlock"], False),
        ([], ["GetSBlock"], False),
        (None, ["GetSBlock"], False),
        ([1e-3], [], False),
        ([1e-3], ["EnterPostproc", "GetSBlock"], False),
    ],
)
def test_is_valid_record_is_tvms_rule(run_secs: list[float] | None, kinds: list[str], valid: bool) -> None:
    assert ranking.is_valid_record(run_secs, kinds) is valid
