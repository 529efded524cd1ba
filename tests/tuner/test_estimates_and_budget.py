"""A task's latency before it is measured (``tuner.estimates``) and a job's time budget (``tuner.budget``)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from db.engine import db_now, session_scope
from db.job_schedule import set_time_budget
from factories import add_job
from tuner.budget import TimeBudget, database_clock
from tuner.estimates import argument_bytes, estimate_latency

CPU = {"kind": "llvm", "num-cores": 2}


def _args(*shapes: tuple[int, ...], dtype: str = "float32") -> str:
    return json.dumps([["TENSOR", dtype, list(s)] for s in shapes])


def test_argument_bytes_reads_metaschedule_arg_info() -> None:
    assert argument_bytes(_args((64, 64), (64, 64), (64, 64))) == 3 * 64 * 64 * 4
    assert argument_bytes(_args((10,), dtype="float16")) == 20
    assert argument_bytes("[]") == 0


def test_a_conv_is_estimated_far_above_a_softmax_and_compute_and_memory_both_count() -> None:
    conv = estimate_latency(flops=2 * 64 * 64 * 3 * 3 * 56 * 56, args_info_json=_args((1, 64, 56, 56), (64, 64, 3, 3),
                                                                                      (1, 64, 56, 56)), target=CPU)
    softmax = estimate_latency(flops=5 * 1000, args_info_json=_args((1, 1000), (1, 1000)), target=CPU)
    copy = estimate_latency(flops=0, args_info_json=_args((1 << 20,), (1 << 20,)), target=CPU)
    assert conv > 100 * softmax and softmax > 0
    assert copy > 100 * softmax  # no FLOPs, but 8 MB to move
    assert estimate_latency(flops=None, args_info_json="[]", target=CPU) > 0
    more_cores = estimate_latency(flops=1e9, args_info_json="[]", target={"kind": "llvm", "num-cores": 8})
    assert more_cores < estimate_latency(flops=1e9, args_info_json="[]", target=CPU)


def test_a_time_budget_is_spent_by_the_injected_clock() -> None:
    start = datetime(2026, 1, 1, 12, 0, 0)
    now = [start]
    budget = TimeBudget(60, start, lambda: now[0])
    assert not budget.spent() and budget.left_s() == 60
    now[0] = start + timedelta(seconds=59.9)
    assert not budget.spent()
    now[0] = start + timedelta(seconds=60)
    assert budget.spent() and budget.left_s() == 0
    never = TimeBudget(None, start, lambda: now[0] + timedelta(days=365))
    assert not never.spent() and never.left_s() is None


def test_a_budget_loads_from_the_job_and_reads_the_databases_clock(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        job = add_job(s)
        started = job.started_at = db_now(s) - timedelta(seconds=30)
        set_time_budget(s, job_id=job.id, time_budget_s=45)
        job_id = job.id
    clock = database_clock(session_factory)
    budget = TimeBudget.load(session_factory, job_id, clock)
    assert budget.budget_s == 45 and budget.deadline == started + timedelta(seconds=45)
    assert budget.left_s() <= 15  # the database's clock has moved on since
    assert TimeBudget.load(session_factory, job_id, lambda: budget.deadline).spent()
    with session_scope(session_factory) as s:
        unbounded = add_job(s).id
    assert TimeBudget.load(session_factory, unbounded, clock).deadline is None
