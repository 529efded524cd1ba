"""tuner.compile's fallback: functions without a valid tuned record get TVM's default schedules, not naive loops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.tvm_json import workload_from_json
from tuner.compile import compile_model_stats, random_inputs, run_outputs
from tuner.default_schedule import Fallback, is_scheduled, schedule_functions
from tuner.intake import convert_onnx, extract_workloads, fuse_for_tuning


def _loop_kinds(func: Any) -> set[str]:
    """The non-serial loop kinds in a PrimFunc, read from its TVMScript (0.27 has no Python TIR visitor)."""
    text = func.script()
    return {kind for kind in ("parallel", "vectorized", "unroll") if f"T.{kind}(" in text}


def _fused(content: bytes, target: dict[str, Any]) -> Any:
    from tuner.intake import as_target

    _, mod = convert_onnx(content, None)
    return fuse_for_tuning(mod, as_target(target))


def _conv_name(fused: Any) -> str:
    return next(gv.name_hint for gv, _ in fused.functions_items() if "conv2d" in gv.name_hint)


def test_untuned_conv_gets_a_parallel_vectorized_default_schedule(convnet_bytes: bytes, cpu_target: dict[str, Any]) -> None:
    from tuner.intake import as_target

    fused = _fused(convnet_bytes, cpu_target)
    conv = _conv_name(fused)
    naive_counts: dict[str, int] = {}
    naive = schedule_functions(fused, _fused(convnet_bytes, cpu_target), as_target(cpu_target), Fallback.NAIVE, naive_counts)
    counts: dict[str, int] = {}
    default = schedule_functions(fused, _fused(convnet_bytes, cpu_target), as_target(cpu_target), Fallback.DEFAULT, counts)

    assert set(naive_counts) == {"naive"} and not is_scheduled(naive[conv])
    assert "parallel" not in _loop_kinds(naive[conv]) and "vectorized" not in _loop_kinds(naive[conv])
    assert "naive" not in counts and sum(counts.values()) == naive_counts["naive"]
    assert is_scheduled(default[conv])
    assert {"parallel", "vectorized"} <= _loop_kinds(default[conv])


@pytest.fixture
def configs_without_conv(convnet_bytes: bytes, cpu_target: dict[str, Any], tmp_path: Path) -> Path:
    """A JSONDatabase with a valid record for every convnet workload except one conv, which has only a failed one."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from common.tvm_env import prepare_tvm

    prepare_tvm(("llvm",))
    target = tvm.target.Target(cpu_target)
    db = ms.database.JSONDatabase(work_dir=str(tmp_path))
    workloads = extract_workloads(convnet_bytes, None, cpu_target)
    conv = next(w for w in workloads if "conv2d" in w.name)
    for i, w in enumerate(workloads):
        mod = workload_from_json(w.mod_json)
        ctx = ms.TuneContext(mod=mod, target=target, space_generator="post-order-apply", num_threads=1, rand_state=i)
        trace = ctx.generate_design_space()[0].trace
        run_secs = [1e10] if w is conv else [1e-5]  # 1e10: MetaSchedule's "failed" stub, never a valid record
        db.commit_tuning_record(ms.database.TuningRecord(
            trace, db.commit_workload(mod), run_secs, target, ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
    return tmp_path


def test_task_without_valid_record_compiles_with_default_rules(
    convnet_bytes: bytes, configs_without_conv: Path, cpu_target: dict[str, Any]
) -> None:
    from onnx.reference import ReferenceEvaluator

    compiled = compile_model_stats(convnet_bytes, None, cpu_target, configs_without_conv, fallback=Fallback.DEFAULT)
    assert compiled.functions_tuned == compiled.functions_total - 1
    assert compiled.schedules.get("tuned") == compiled.functions_total - 1
    assert compiled.schedules.get("naive", 0) == 0 and sum(compiled.schedules.values()) == compiled.functions_total

    old = compile_model_stats(convnet_bytes, None, cpu_target, configs_without_conv, fallback=Fallback.NAIVE)
    assert old.schedules.get("naive") == 1  # what TVM 0.27 compile_relax did with it

    arrays = random_inputs(compiled.input_shapes, compiled.input_dtypes, seed=1)
    want = ReferenceEvaluator(convnet_bytes).run(None, dict(zip(compiled.input_shapes, arrays, strict=True)))
    for got, ref in zip(run_outputs(compiled.exe, arrays, cpu_target), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_measured_fallback_keeps_the_fastest_so_a_slow_tuned_record_loses(
    convnet_bytes: bytes, cpu_target: dict[str, Any]
) -> None:
    """MEASURED compares the tuned schedule, the defaults and naive loops by the timer's verdict."""
    from tuner.intake import as_target

    target = as_target(cpu_target)
    fused = _fused(convnet_bytes, cpu_target)
    conv = _conv_name(fused)
    applied = _fused(convnet_bytes, cpu_target)
    # pretend the database tuned the conv: its "tuned" schedule is a default one, marked scheduled
    pretend = schedule_functions(fused, _fused(convnet_bytes, cpu_target), target, Fallback.DEFAULT, {})
    applied[conv] = pretend[conv]

    def timer_penalizing(kind_of: Any) -> Any:
        def timer(func: Any, _target: Any) -> float:
            return kind_of(func)
        return timer

    tuned_body = pretend[conv].body

    def tuned_is_slow(func: Any) -> float:
        return 1.0 if _same_body(func, tuned_body) else 1e-3

    counts: dict[str, int] = {}
    chosen = schedule_functions(fused, applied, target, Fallback.MEASURED, counts, timer=timer_penalizing(tuned_is_slow))
    assert "tuned" not in counts
    assert not _same_body(chosen[conv], tuned_body)

    counts = {}
    schedule_functions(fused, applied, target, Fallback.MEASURED, counts,
                       timer=timer_penalizing(lambda f: 1e-3 if _same_body(f, tuned_body) else 1.0))
    assert counts.get("tuned") == 1


def _same_body(func: Any, body: Any) -> bool:
    import tvm_ffi

    return bool(tvm_ffi.structural_equal(func.body, body))


def _arg_shape(func: Any, index: int) -> list[int]:
    from tvm.s_tir import meta_schedule as ms

    return [int(d) for d in ms.arg_info.ArgInfo.from_prim_func(func)[index].as_json()[2]]


def _has_layout_rewrite(func: Any) -> bool:
    return "meta_schedule.layout_rewrite_preproc" in func.script()


def test_packed_weights_are_packed_once_at_compile_time(convnet_bytes: bytes, cpu_target: dict[str, Any]) -> None:
    """A conv schedule that tiles its weight (``RewriteLayout``) gets the weight packed by the compile step."""
    import tvm
    from tvm import relax

    from tuner.compile import prepack_weights
    from tuner.intake import as_target

    target = as_target(cpu_target)
    fused = _fused(convnet_bytes, cpu_target)
    conv = _conv_name(fused)
    scheduled = schedule_functions(fused, _fused(convnet_bytes, cpu_target), target, Fallback.DEFAULT, {})
    assert _has_layout_rewrite(scheduled[conv])  # the kernel would repack its weight on every call
    weight_shape = _arg_shape(fused[conv], 1)

    with target, tvm.transform.PassContext(opt_level=3):
        packed = prepack_weights(scheduled)
    functions = {g.name_hint: f for g, f in packed.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert not any(_has_layout_rewrite(f) for f in functions.values())
    assert not any("weight_prepack" in name for name in functions)  # run at compile time, then dropped
    kernel = packed[f"{conv}_prepacked"]
    packed_shape = _arg_shape(kernel, 1)
    assert packed_shape != weight_shape and int(np.prod(packed_shape)) >= int(np.prod(weight_shape))
    # main passes the conv a constant already in the packed layout: nothing packs at run time
    text = packed["main"].script(show_meta=False)
    assert f"{conv}_prepacked, (" in text and "weight_prepack" not in text
    assert isinstance(packed["main"], relax.Function)
