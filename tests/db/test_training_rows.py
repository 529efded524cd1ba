"""The cost model's training rows: valid unflagged times and the schedule's own errors; leave-one-model-out splits."""

from __future__ import annotations

import pytest
from factories import (
    SCHEDULE_TRACE,
    add_job,
    add_measurement,
    add_model,
    add_task,
    add_worker,
    add_workload,
)
from sqlalchemy.orm import Session, sessionmaker

from common.errors import BadInput, NotFound
from common.protocol import ErrorKind, JobStatus
from db import workers
from db.confirmation import Confirmation
from db.engine import session_scope
from db.models import Candidate, Measurement, Worker
from db.training_data import (
    model_workload_ids,
    models_measured_on,
    resolve_model,
    training_rows,
)


def test_rows_are_valid_unflagged_times_and_errors_the_schedule_caused(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        job = add_job(s, status=JobStatus.done)
        task = add_task(s, job=job, workload=add_workload(s))
        worker = add_worker(s, target_key=job.target_key)
        qemu = s.get(Worker, workers.register_worker(
            s, name="qemu", token_id=None, hardware={}, target_json="{}", target_key=job.target_key, emulated=True).id)

        def m(**kw: object):  # type: ignore[no-untyped-def]
            return add_measurement(s, task=task, worker=kw.pop("by", worker), trace_json=kw.pop("trace", SCHEDULE_TRACE),
                                   **kw)

        kept = m(run_secs=[2e-4])
        m(run_secs=[1e-4], flagged=True)  # disturbed timing
        m(trace="[[],[]]", run_secs=[3e-4])  # a FleetRunner ad-hoc run: no schedule
        m(run_secs=[1e10, 1e10])  # TVM's failed-run stub: not a time
        m(run_secs=[1e-4], by=qemu)  # emulated
        m(error="boom", by=qemu)  # an emulated error says nothing either
        refuted = m(run_secs=[5e-5])
        refuted.confirmation = Confirmation.rejected.value
        remeasure = m(run_secs=[2e-4])
        s.get(Candidate, remeasure.candidate_id).confirms_measurement_id = kept.id
        built_wrong = m(error="build failed", error_kind=ErrorKind.build)
        old_error = m(error="boom")  # no kind: stored before kinds were kept
        m(error="cross-compiled only", error_kind=ErrorKind.unsupported)  # this worker's limit, not the schedule's
        m(error="implausible", error_kind=ErrorKind.rejected)
        key, expected = job.target_key, [kept.id, built_wrong.id, old_error.id]
    with session_scope(session_factory) as s:
        rows = training_rows(s, target_key=key)
        assert [r.measurement_id for r in rows] == expected
        assert [r.mean_secs for r in rows] == [2e-4, None, None]


def test_leave_one_model_out_rows_never_hold_the_models_workloads(session_factory: sessionmaker[Session]) -> None:
    """Held out model A: its workloads' rows are gone from training, also those measured under B's job."""
    with session_scope(session_factory) as s:
        a, b = add_model(s, name="resnet"), add_model(s, name="bert")
        shared, only_a, only_b = add_workload(s), add_workload(s), add_workload(s)
        job_a, job_b = add_job(s, model=a, status=JobStatus.done), add_job(s, model=b, status=JobStatus.done)
        worker = add_worker(s, target_key=job_a.target_key)
        ids: dict[str, list[int]] = {}
        for name, job, wl in (("a_shared", job_a, shared), ("a_only", job_a, only_a),
                              ("b_shared", job_b, shared), ("b_only", job_b, only_b)):
            task = add_task(s, job=job, workload=wl)
            ids[name] = [add_measurement(s, task=task, worker=worker, trace_json=SCHEDULE_TRACE, run_secs=[t]).id
                         for t in (1e-4, 2e-4)]
        key, a_id, b_id, sha = job_a.target_key, a.id, b.id, a.sha256
        wids = {"shared": shared.id, "a": only_a.id, "b": only_b.id}
    with session_scope(session_factory) as s:
        assert resolve_model(s, ref=str(a_id)) == (a_id, "resnet")
        assert resolve_model(s, ref="bert") == (b_id, "bert")
        assert resolve_model(s, ref=sha[:10].upper()) == (a_id, "resnet")
        with pytest.raises(NotFound):
            resolve_model(s, ref="gpt")
        held = model_workload_ids(s, model_id=a_id)
        assert held == sorted([wids["shared"], wids["a"]])
        train = [r.measurement_id for r in training_rows(s, target_key=key, exclude_workload_ids=held)]
        assert train == ids["b_only"], "B's measurements of the shared workload are held out too"
        test = [r.measurement_id for r in training_rows(s, target_key=key, workload_ids=held, model_id=a_id)]
        assert test == ids["a_shared"] + ids["a_only"]
        assert models_measured_on(s, target_key=key) == [(a_id, "resnet"), (b_id, "bert")]
        add_model(s, name="bert")
    with session_scope(session_factory) as s:
        with pytest.raises(BadInput, match="names 2 models"):
            resolve_model(s, ref="bert")
        assert s.query(Measurement).count() == 8
