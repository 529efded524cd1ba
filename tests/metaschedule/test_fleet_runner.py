"""``ms.tune_tir`` in the test process measures on a real worker through ``FleetRunner``.

A service and one worker run as processes (``tunehub.harness``). Tuning stays
here; the worker leases, builds and times the candidates. Records land in
tunehub's database (the user's ``Database``, downloadable with ``tunehub records
export``; the ad-hoc job's measurements stay apart and are no configs), and a
worker killed mid-batch ends the script with errors reported, not a hang.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import tvm
from conftest import TARGET  # noqa: F401  (imports TVM with the test settings)
from tests_support import WORKER_TEST_TIMINGS, wait_for
from tvm.s_tir import meta_schedule as ms
from tvm_helpers import matmul_workload

from common.errors import NotFound
from tunehub.harness import running
from tunehub.metaschedule import Database, FleetBuilder, FleetRunner

pytestmark = pytest.mark.slow


def _tune(db: Any, runner: Any, target: Any, work_dir: Path) -> None:
    ms.tune_tir(
        matmul_workload(32), target, str(work_dir), max_trials_global=8, num_trials_per_iter=8, num_tuning_cores=2,
        builder=FleetBuilder(), runner=runner, database=db,
    )


def test_tune_tir_measures_on_the_fleet_and_survives_a_lost_worker(tmp_path: Path) -> None:
    with running(tmp_path / "stack", tuner=False, workers=1,
                 overrides={"TUNEHUB_LEASE_TTL_S": "30", **WORKER_TEST_TIMINGS}) as h:
        worker = h.wait_for_workers(1)[0]
        target = tvm.target.Target(worker.target)
        with h.client() as admin:
            token = admin.create_token("alice", "user").token
        db = Database(h.db_url, target=worker.target, owner="alice")

        runner = FleetRunner(h.server, token=token, target=worker.target, timeout_s=600, poll_s=0.5)
        _tune(db, runner, target, tmp_path / "wd1")
        records = db.get_all_tuning_records()
        assert records, h.logs()
        measured = [r for r in records if r.run_secs is not None]
        assert measured, h.logs()
        best = db.get_top_k(db.commit_workload(matmul_workload(32)), 1)
        assert best and 0 < float(best[0].run_secs[0]) < 1.0
        # The user's tuning records download as a MetaSchedule database that TVM serves them from.
        out = tmp_path / "records"
        target_json = worker.target if isinstance(worker.target, str) else json.dumps(worker.target)
        _cli("records", "export", "-o", str(out), "--target", target_json, "--top", "1", "--server", h.server,
             "--token", token)
        exported = ms.database.JSONDatabase(work_dir=str(out))
        assert exported.get_top_k(exported.commit_workload(matmul_workload(32)), 1), h.logs()
        # The ad-hoc run's measurements (scheduled modules, empty traces) are no tuning records of the fleet.
        with h.client() as admin, pytest.raises(NotFound):
            admin.download_configs(job=runner.run_ids[0])

        # A worker lost mid-batch: the script finishes, the batch's candidates come back as errors.
        before = len(db)
        # The batch's timeout runs from its submission: the idle worker leases it within a poll (1 s),
        # then is killed; the runner gives up on the rest after 30 s.
        lost = FleetRunner(h.server, token=token, target=worker.target, timeout_s=30, poll_s=0.5)
        done = threading.Event()
        crashed: list[BaseException] = []

        def tune_again() -> None:
            try:
                _tune(db, lost, target, tmp_path / "wd2")
            except BaseException as exc:  # noqa: BLE001  (re-raised in the test thread below)
                crashed.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=tune_again, daemon=True)
        thread.start()
        wait_for(
            lambda: _leased(h, lost),
            timeout_s=300, what="the second batch leased by the worker", on_timeout=h.logs,
        )
        h.procs["worker"].kill()
        assert done.wait(300), "tune_tir hung after the worker was lost"
        assert not crashed, crashed
        new = db.get_all_tuning_records()[: len(db)]
        assert len(db) > before
        errors = [r for r in new if r.run_secs is None or all(float(s) >= 1e10 for s in r.run_secs)]
        assert errors, "the lost batch should be reported as errors"


def _cli(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "tunehub", *args], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _leased(h: Any, runner: Any) -> bool:
    """Has the worker leased a candidate of the runner's latest ad-hoc run?"""
    if not runner.run_ids:
        return False
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(h.db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            n = conn.execute(
                text("SELECT count(*) FROM candidates c JOIN tasks t ON t.id = c.task_id "
                     "WHERE t.job_id = :j AND c.state = 'leased'"),
                {"j": runner.run_ids[-1]},
            ).scalar()
    finally:
        engine.dispose()
    return bool(n)
