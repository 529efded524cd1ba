"""``FleetRunner`` without any worker: its futures end as timeout errors and the ad-hoc run is withdrawn.

A real service (uvicorn on loopback, SQLite and PostgreSQL); no worker serves
the target, so nothing is ever measured.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tvm
from conftest import TARGET
from sqlalchemy import select
from tvm.s_tir import meta_schedule as ms
from tvm_helpers import matmul_workload

from common.protocol import CandidateState, JobStatus
from db.models import Candidate, Job, Task
from tunehub.metaschedule import FleetBuilder, FleetRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "service"))
from live_server import Live, running


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[Live]:
    with running(db_url, tmp_path / "live") as svc:
        yield svc


def test_no_worker_means_timeout_errors_not_a_hang(live: Live) -> None:
    mod = matmul_workload(16)
    built = FleetBuilder().build([ms.builder.BuilderInput(mod, tvm.target.Target(TARGET))] * 2)
    assert [b.error_msg for b in built] == [None, None]
    runner = FleetRunner(live.base_url, token=live.token("user"), target=TARGET, timeout_s=3, poll_s=0.2)
    args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    started = time.monotonic()
    futures = runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", args) for b in built])
    results = [f.result() for f in futures]
    assert time.monotonic() - started < 60
    assert all(r.run_secs is None and "timeout" in r.error_msg for r in results), [r.error_msg for r in results]
    with live.session() as s:
        job = s.get(Job, runner.run_ids[0])
        states = set(s.scalars(select(Candidate.state).join(Task, Task.id == Candidate.task_id)
                               .where(Task.job_id == job.id)))
        assert job.status == JobStatus.done.value
    assert states == {CandidateState.cancelled.value}


def test_unreachable_service_is_an_error_per_candidate(tmp_path: Path) -> None:
    mod = matmul_workload(16)
    built = FleetBuilder().build([ms.builder.BuilderInput(mod, tvm.target.Target(TARGET))])
    runner = FleetRunner("http://127.0.0.1:9", token="x", target=TARGET, timeout_s=3)
    args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    (future,) = runner.run([ms.runner.RunnerInput(built[0].artifact_path, "cpu", args)])
    assert future.done() and "cannot submit" in future.result().error_msg
