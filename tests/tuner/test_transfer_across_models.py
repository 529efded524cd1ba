"""A new model's workload starts from the best schedules its family has on the target, whichever
model they were tuned for (``tuner.transfer`` over ``db.families``)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.engine import session_scope
from db.families import family_bests
from db.models import Candidate, Job, Measurement
from factories import add_job, add_measurement, add_model, add_task, add_worker, add_workload
from test_job_runner import FAST, Measurer, _claim, _traces, counts, settings_for
from tuner.job_runner import run_job
from tvm_helpers import CPU_TARGET


def conv_workload(c: int, hw: int, k: int) -> Any:
    """An IRModule {"main": a 3×3 convolution, no padding}: (1, c, hw, hw) * (k, c, 3, 3)."""
    import tvm
    from tvm import te

    data = te.placeholder((1, c, hw, hw), name="data")
    weight = te.placeholder((k, c, 3, 3), name="weight")
    rc, ry, rx = te.reduce_axis((0, c), "rc"), te.reduce_axis((0, 3), "ry"), te.reduce_axis((0, 3), "rx")
    out = te.compute(
        (1, k, hw - 2, hw - 2),
        lambda n, f, y, x: te.sum(data[n, rc, y + ry, x + rx] * weight[f, rc, ry, rx], axis=[rc, ry, rx]),
        name="conv",
    )
    return tvm.IRModule({"main": te.create_prim_func([data, weight, out])})


def _conv_job(factory: sessionmaker[Session], name: str, shape: tuple[int, int, int], *, trials: int) -> tuple[int, int]:
    """A new model with one conv task; (job id, task id)."""
    c, hw, k = shape
    with session_scope(factory) as s:
        job = add_job(s, model=add_model(s, name=name), target=CPU_TARGET, trials=trials, per_round=4)
        flops = 2.0 * k * (hw - 2) ** 2 * c * 9
        task = add_task(s, job=job, workload=add_workload(s, mod=conv_workload(*shape), flops=flops), name=name)
        return job.id, task.id


def test_family_bests_answer_from_any_model_on_the_target(session_factory: sessionmaker[Session]) -> None:
    """The query behind the transfer does not look at models: another model's member, measured on the
    key, is found (best traces first); one measured on another key is not."""
    with session_scope(session_factory) as s:
        first = add_job(s, model=add_model(s, name="first"))
        other_key = add_job(s, model=add_model(s, name="elsewhere"), target={"kind": "llvm", "num-cores": 7})
        member = add_workload(s, shash="m" * 24, flops=1e6, family="fam")
        stranger = add_workload(s, shash="s" * 24, flops=1e6, family="fam")
        newcomer = add_workload(s, shash="n" * 24, flops=2e6, family="fam")
        w1 = add_worker(s, target_key=first.target_key)
        w2 = add_worker(s, target_key=other_key.target_key)
        t1 = add_task(s, job=first, workload=member)
        for trace, secs in (("slow", 3e-3), ("fast", 1e-3), ("broken", None)):
            add_measurement(s, task=t1, worker=w1, trace_json=trace, run_secs=[secs] if secs else None,
                            error=None if secs else "build failed")
        add_measurement(s, task=add_task(s, job=other_key, workload=stranger), worker=w2, trace_json="x",
                        run_secs=[1e-4])
        second = add_job(s, model=add_model(s, name="second"))  # a new model, same target
        add_task(s, job=second, workload=newcomer)
        assert second.model_id != first.model_id
        found = family_bests(s, family="fam", target_key=second.target_key, exclude_workload_id=newcomer.id,
                             flops=2e6)
    assert [(m.workload_id, m.traces) for m in found] == [(member.id, ["fast", "slow"])]


@pytest.mark.slow
def test_a_second_models_conv_of_another_shape_starts_from_the_first_models_best(
        db_url: str, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture) -> None:
    """Model A's conv (8→16 channels, 10×10) is tuned; model B's conv (16→8 channels, 14×14), new to the
    target, measures A's 4 best schedules, adapted to its shape, as its first batch."""
    from tvm.s_tir import meta_schedule as ms
    import tvm

    from common.tvm_json import trace_to_json
    from tuner.transfer import adapt_trace

    caplog.set_level("INFO", logger="tuner")
    settings = settings_for(db_url)
    a_shape, b_shape = (8, 10, 16), (16, 14, 8)
    job_a, task_a = _conv_job(session_factory, "conv_a", a_shape, trials=8)
    with session_scope(session_factory) as s:
        target_key = s.get(Job, job_a).target_key
    with Measurer(session_factory, target_key):
        assert _claim(session_factory, "t") == job_a
        run_job(job_a, settings=settings, session_factory=session_factory, owner="t",
                stop=threading.Event(), search_config=FAST)
        job_b, task_b = _conv_job(session_factory, "conv_b", b_shape, trials=4)
        assert _claim(session_factory, "t") == job_b
        run_job(job_b, settings=settings, session_factory=session_factory, owner="t",
                stop=threading.Event(), search_config=FAST)
    c = counts(session_factory, job_b)
    assert c["status"] == "done" and c["measured"] == 4, c["error"]
    with session_scope(session_factory) as s:
        assert s.get(Job, job_a).model_id != s.get(Job, job_b).model_id
        best_a = s.scalars(
            select(Candidate.trace_json).join(Measurement, Measurement.candidate_id == Candidate.id)
            .where(Candidate.task_id == task_a, Measurement.mean_secs.is_not(None))
            .order_by(Measurement.mean_secs, Measurement.id).limit(4)).all()
        valid_b = s.scalars(select(Measurement.mean_secs).join(Candidate, Candidate.id == Measurement.candidate_id)
                            .where(Candidate.task_id == task_b, Measurement.mean_secs.is_not(None))).all()
    assert any(f"job {job_b} task conv_b: 4 schedules carried over from 1 workloads" in r.getMessage()
               for r in caplog.records)
    src, dst = conv_workload(*a_shape), conv_workload(*b_shape)
    ctx = ms.TuneContext(mod=dst, target=tvm.target.Target(CPU_TARGET), space_generator="post-order-apply",
                         search_strategy="evolutionary", num_threads=1)
    adapted = [adapt_trace(src, t, dst, list(ctx.space_generator.postprocs)) for t in best_a]
    assert all(sch is not None for sch in adapted)
    assert _traces(session_factory, job_b) == {trace_to_json(sch.trace) for sch in adapted}
    assert len(valid_b) == 4
