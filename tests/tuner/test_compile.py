"""tuner.compile: ONNX → VM executable, untuned and with a config zip; outputs and ``tunehub compile --json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from db.records import BestRecord
from common.errors import BadInput
from common.tvm_json import trace_to_json, workload_from_json
from tuner.compile import compile_model, compile_model_stats, measure_latency, random_inputs, run_outputs
from tuner.configs import build_config_zip, extract_config_zip
from tuner.intake import extract_workloads

ROOT = Path(__file__).resolve().parents[2]


def _reference(content: bytes, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    return list(ReferenceEvaluator(content).run(None, inputs))


def _check_against_reference(content: bytes, compiled: Any, target: dict[str, Any]) -> None:
    arrays = random_inputs(compiled.input_shapes, compiled.input_dtypes, seed=1)
    got = run_outputs(compiled.exe, arrays, target)
    want = _reference(content, dict(zip(compiled.input_shapes, arrays, strict=True)))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def mlp_configs(mlp_bytes: bytes, cpu_target: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config folder for every mlp workload: a real MetaSchedule design-space schedule each."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from common.tvm_env import prepare_tvm

    prepare_tvm(("llvm",))
    records = []
    for i, w in enumerate(extract_workloads(mlp_bytes, None, cpu_target)):
        ctx = ms.TuneContext(
            mod=workload_from_json(w.mod_json),
            target=tvm.target.Target(cpu_target),
            space_generator="post-order-apply",
            search_strategy="replay-trace",
            num_threads=1,
            rand_state=i,
        )
        trace = trace_to_json(ctx.generate_design_space()[0].trace)
        records.append(BestRecord(i, w.shash, w.mod_json, w.args_info_json, trace, [1e-5], 1e-5, i))
    return extract_config_zip(build_config_zip(records, cpu_target), tmp_path_factory.mktemp("mlp-configs"))


@pytest.mark.parametrize(("model", "functions"), [("mlp", 3), ("convnet", 7)])
def test_untuned_matches_onnx_reference(
    model: str, functions: int, example_models: dict[str, Path], cpu_target: dict[str, Any]
) -> None:
    content = example_models[model].read_bytes()
    compiled = compile_model_stats(content, None, cpu_target, None)
    assert (compiled.functions_tuned, compiled.functions_total) == (0, functions)
    _check_against_reference(content, compiled, cpu_target)


def test_tuned_uses_every_config_and_stays_correct(mlp_bytes: bytes, mlp_configs: Path, cpu_target: dict[str, Any]) -> None:
    compiled = compile_model_stats(mlp_bytes, None, cpu_target, mlp_configs)
    assert (compiled.functions_tuned, compiled.functions_total) == (3, 3)
    _check_against_reference(mlp_bytes, compiled, cpu_target)

    timing = measure_latency(compiled.exe, compiled.input_shapes, compiled.input_dtypes, cpu_target, repeat=3, min_repeat_ms=5)
    assert len(timing["runs_ms"]) == 3 and all(r > 0 for r in timing["runs_ms"])
    assert min(timing["runs_ms"]) <= timing["median_ms"] <= max(timing["runs_ms"])
    assert timing["num_threads"] >= 1  # in-process the pool may predate the target; the CLI test checks 2


def test_symbolic_batch_with_shapes(make_models: Any, cpu_target: dict[str, Any]) -> None:
    content = make_models.mlp_model(batch="N").SerializeToString()
    with pytest.raises(BadInput, match="symbolic"):
        compile_model(content, None, cpu_target, None)
    compiled = compile_model_stats(content, {"x": [3, 64]}, cpu_target, None)
    assert compiled.input_shapes == {"x": [3, 64]}
    _check_against_reference(content, compiled, cpu_target)


def test_bad_config_folder(mlp_bytes: bytes, cpu_target: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not a MetaSchedule JSONDatabase folder"):
        compile_model(mlp_bytes, None, cpu_target, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing created in the user's folder


def _cli(*args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "tunehub", "compile", "--json", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"want one JSON line on stdout, got {proc.stdout!r}; stderr: {proc.stderr[-2000:]}"
    return {"rc": proc.returncode, **json.loads(lines[0])}


def test_cli_untuned_and_tuned(example_models: dict[str, Path], mlp_configs: Path, cpu_target: dict[str, Any]) -> None:
    common = [str(example_models["mlp"]), "--target", json.dumps(cpu_target), "--repeat", "3", "--min-repeat-ms", "5"]
    untuned = _cli(*common)
    tuned = _cli(*common, "--configs", str(mlp_configs), "--shape", "x=8,64")
    for out in (untuned, tuned):
        assert out["rc"] == 0 and out["median_ms"] > 0 and len(out["runs_ms"]) == 3 and out["num_threads"] == 2
        assert out["functions_total"] == 3 and out["target"]["kind"] == "llvm"
    assert (untuned["tuned"], untuned["functions_tuned"]) == (False, 0)
    assert (tuned["tuned"], tuned["functions_tuned"]) == (True, 3)


def test_cli_reports_errors_as_json(tmp_path: Path, cpu_target: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from tunehub.cli import app

    target = json.dumps(cpu_target)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx at all")
    cases = [
        ([str(tmp_path / "missing.onnx"), "--target", target], "cannot read the model"),
        ([str(bad), "--target", target], "not a valid ONNX model"),
        ([str(bad), "--target", '{"kind":"no-such-kind"}'], "target"),
        ([str(bad), "--target", target, "--shape", "x=a,b"], "shape"),
    ]
    for argv, needle in cases:
        result = CliRunner().invoke(app, ["compile", "--json", *argv])
        assert result.exit_code == 2, (argv, result.output)
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1, result.stdout
        out = json.loads(lines[0])
        assert out["error"] == "bad_input" and needle in out["detail"], out
