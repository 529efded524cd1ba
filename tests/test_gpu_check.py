"""bench/gpu_check.py without a GPU: its plan, its models, and the ``--dry-run`` through a real service.

The GPU run itself needs a GPU machine; what runs without one is tested here:
argument parsing, the planned workloads (ONNX models TVM's frontend accepts, with
the FLOPs the ratios divide by), the report's rows, and a dry run that starts the
service, sends a model through its intake for the GPU target, queues the job and
writes ``gpu_check.json`` with every GPU step skipped and its reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

import gpu_check


def test_arguments_and_plan() -> None:
    args = gpu_check.parse_args([])
    assert args.sizes == [4096, 8192] and args.dtypes == ["float16", "bfloat16"] and args.conv
    names = [w.name for w in gpu_check.plan(args.sizes, args.dtypes, args.conv)]
    assert names == ["matmul_float16_4096", "matmul_float16_8192", "matmul_bfloat16_4096",
                     "matmul_bfloat16_8192", "conv2d_resnet50_conv2x_float16"]
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--dtypes", "float8"])
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--arch", "90"])


@pytest.mark.parametrize("workload", gpu_check.plan([4096], ["float16", "bfloat16"], True), ids=lambda w: w.name)
def test_planned_models_are_valid_onnx(workload: gpu_check.Workload) -> None:
    model = onnx.load_from_string(workload.onnx_bytes())
    onnx.checker.check_model(model, full_check=True)  # shape inference agrees with the declared output
    assert [i.name for i in model.graph.input] == list(workload.inputs())
    assert not model.graph.initializer, "weights are inputs: the upload stays small at any size"


def test_flops_and_report_rows() -> None:
    matmul, conv = gpu_check.plan([4096], ["float16"], True)
    assert matmul.flops == 2 * 4096**3
    assert conv.flops == 2 * 32 * 64 * 56 * 56 * 64 * 3 * 3
    row = gpu_check.compare(matmul, 0.002, {"library": "cuBLAS", "secs": 0.001, "tflops": matmul.flops / 1e-3 / 1e12})
    assert row["ratio"] == pytest.approx(0.5) and row["meets_target"] is False
    assert row["tuned"]["tflops"] == pytest.approx(matmul.flops / 0.002 / 1e12)
    no_gpu = gpu_check.compare(matmul, None, gpu_check.skipped("no GPU"))
    assert no_gpu["ratio"] is None and no_gpu["meets_target"] is None and no_gpu["baseline"] == {"skipped": "no GPU"}
    assert gpu_check.torch_baseline(matmul, {"available": False, "reason": "no CUDA"}) == {"skipped": "no CUDA"}


def test_dry_run_goes_through_the_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One workload, to keep it short: the service's intake makes its task for the GPU target."""
    rc = gpu_check.main(["--dry-run", "--out", str(tmp_path), "--sizes", "4096", "--dtypes", "bfloat16", "--no-conv",
                         "--arch", "sm_90"])
    out = capsys.readouterr().out
    assert rc == 0, out
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["mode"] == "dry_run" and result["passed"] is True
    assert result["target"]["kind"] == "cuda" and result["target"]["arch"] == "sm_90"
    assert [p["name"] for p in result["plan"]] == ["matmul_bfloat16_4096"]
    (job,) = result["jobs"].values()
    assert job["status"] == "queued" and job["tasks"], job
    (row,) = result["results"]
    assert row["tuned"] is None and "skipped" in row["baseline"] and row["ratio"] is None
    assert "skipped" in result["worker"] and "skipped" in result["e2e"]
    torch = result["machine"]["torch"]
    assert torch["available"] or torch["reason"], "the baselines say why they cannot run"
    assert "| matmul_bfloat16_4096 |" in out
