"""The whole path, real at every step: upload → job → worker → configs → compile.

Also: the service and its tuner killed with SIGKILL mid-job and restarted →
the job finishes, nothing measured is lost or counted twice.
"""

from __future__ import annotations

import io
import os
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests_support import EXAMPLES, wait_for

pytestmark = pytest.mark.slow


def test_upload_tune_download_compile(stack, tmp_path: Path) -> None:
    stack.start_service()
    stack.start_worker()
    target = stack.wait_for_workers()[0].target
    with stack.client() as client:
        model = client.upload_model(EXAMPLES / "mlp.onnx", name="mlp")
        # A first batch of 2 for each of the 3 tasks: with 2 batches in flight at most, the third
        # is queued after the first is reported, so the worker measures in 2 or more leases.
        job = client.create_job(model.id, target, trials=6, trials_per_round=2)
        assert len(job.tasks) == 3, "the MLP has three tunable tasks"
        job = wait_for(lambda: (j := client.job(job.id)).status.value not in ("queued", "running") and j,
                       timeout_s=900, what=f"job {job.id} to end", on_timeout=stack.logs)
        assert job.status.value == "done", (job.error, stack.logs())
        assert job.trials_done == 6
        assert all(t.best_latency_s and t.best_latency_s > 0 for t in job.tasks if t.trials_valid)
        data = client.download_configs(job=job.id)

    # The worker measured several batches (leases), every candidate once.
    leases = stack.sql("SELECT COUNT(DISTINCT c.lease_id) FROM measurements m JOIN candidates c ON c.id = m.candidate_id")
    assert leases[0][0] >= 2
    dupes = stack.sql("SELECT candidate_id, COUNT(*) FROM measurements GROUP BY candidate_id HAVING COUNT(*) > 1")
    assert dupes == []

    # The zip is a MetaSchedule JSON database that TVM loads unchanged.
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert {"database_workload.json", "database_tuning_record.json"} <= names
    from tuner.configs import extract_config_zip

    out = extract_config_zip(data, tmp_path / "configs")
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.JSONDatabase(work_dir=str(out))
    assert len(db.get_all_tuning_records()) >= 1

    # compile_relax with it gives a model whose output matches the untuned model's.
    from tuner.compile import compile_model_stats, random_inputs, run_outputs
    from tuner.intake import inspect_onnx

    content = (EXAMPLES / "mlp.onnx").read_bytes()
    inputs = inspect_onnx(content, None)
    x = random_inputs(inputs.shapes, inputs.dtypes, seed=1)
    tuned = compile_model_stats(content, None, target, out)
    assert tuned.functions_tuned >= 1, "compile_relax found tuned schedules in the downloaded database"
    untuned = compile_model_stats(content, None, target, None)
    assert untuned.functions_tuned == 0
    for a, b in zip(run_outputs(tuned.exe, x, target), run_outputs(untuned.exe, x, target), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_service_killed_mid_job_and_restarted(stack) -> None:
    stack.start_service(tuner=False)
    stack.start("tuner", ["tuner"])
    stack.start_worker()
    target = stack.wait_for_workers()[0].target
    trials = 8  # 4 batches of 2: killed after the first, so batches are still to generate after the restart
    with stack.client() as client:
        model = client.upload_model(EXAMPLES / "mlp.onnx", name="mlp")
        job = client.create_job(model.id, target, trials=trials, trials_per_round=2)
        wait_for(lambda: client.job(job.id).trials_done >= 2, timeout_s=600, what="first measurements",
                 on_timeout=stack.logs)

    for name in ("service", "tuner"):  # kill -9: no chance to clean up
        os.killpg(stack.procs[name].pid, signal.SIGKILL)
        stack.procs[name].wait()
    stack.start_service()  # serve with its embedded tuner, same data dir

    with stack.client() as client:
        done = wait_for(lambda: (j := client.job(job.id)).status.value not in ("queued", "running") and j,
                        timeout_s=900, what="the job to finish after restart", on_timeout=stack.logs)
    assert done.status.value == "done", (done.error, stack.logs())
    assert done.trials_done == trials
    rows = stack.sql("SELECT COUNT(*), COUNT(DISTINCT candidate_id) FROM measurements")
    assert rows[0][0] == rows[0][1] == trials
