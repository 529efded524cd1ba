"""tuner.intake on real ONNX models: inputs, Relax conversion, task extraction, bad input, limits, the sandbox."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from common.errors import BadInput, TooLarge, Unavailable
from common.settings import Settings
from common.tvm_json import workload_from_json, workload_hash
from tuner.intake import (
    CPU_CONV_LAYOUTS,
    ExtractedWorkload,
    as_target,
    extract_workloads,
    fuse_for_tuning,
    inspect_onnx,
    onnx_to_relax,
)
from tuner.intake_checks import IntakeLimits
from tuner.intake_sandbox import extract_in_sandbox, inspect_in_sandbox, intake_slots

MLP_TASKS = {"fused_matmul_add_relu", "fused_matmul1_add_relu", "fused_matmul2_add1"}
CONVNET_TASKS = {  # on CPU: channels-last convolutions, with a transpose at each edge of the conv stack
    "transpose",
    "fused_conv2d_add_relu",
    "max_pool2d",
    "fused_conv2d1_add1_relu1",
    "mean",
    "fused_transpose5_reshape2",
    "fused_matmul_add2",
}


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any] = ()) -> bytes:  # type: ignore[assignment]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_inspect_examples(mlp_bytes: bytes, convnet_bytes: bytes) -> None:
    mlp = inspect_onnx(mlp_bytes)
    assert mlp.shapes == {"x": [8, 64]} and mlp.dtypes == {"x": "float32"} and mlp.names == ["x"]
    assert inspect_onnx(convnet_bytes).shapes == {"x": [1, 3, 32, 32]}
    # restating a fixed shape is allowed; contradicting it is not
    assert inspect_onnx(mlp_bytes, {"x": [8, 64]}).shapes == {"x": [8, 64]}
    with pytest.raises(BadInput, match="dimension 0 of 'x' is fixed at 8"):
        inspect_onnx(mlp_bytes, {"x": [4, 64]})
    with pytest.raises(BadInput, match="rank"):
        inspect_onnx(mlp_bytes, {"x": [8, 64, 1]})
    with pytest.raises(BadInput, match=r"not inputs of the model.*\['x'\]"):
        inspect_onnx(mlp_bytes, {"fc1.w": [64, 128]})  # an initializer is not an input
    with pytest.raises(BadInput, match="positive integers"):
        inspect_onnx(mlp_bytes, {"x": [8, "64"]})


def _check_workloads(workloads: list[ExtractedWorkload], names: set[str]) -> None:
    assert {w.name for w in workloads} == names
    assert len({w.shash for w in workloads}) == len(workloads)
    for w in workloads:
        assert w.weight == 1
        assert w.shash.isdigit()
        assert workload_hash(workload_from_json(w.mod_json)) == w.shash  # the JSON round-trips to the same key
        args = json.loads(w.args_info_json)
        assert args and all(a[0] == "TENSOR" and a[1] == "float32" for a in args)
        assert w.flops is not None and w.flops >= 0
    assert any(w.flops and w.flops > 1e5 for w in workloads)


def test_extract_examples(mlp_bytes: bytes, convnet_bytes: bytes, cpu_target: dict[str, Any]) -> None:
    mlp = extract_workloads(mlp_bytes, None, cpu_target)
    _check_workloads(mlp, MLP_TASKS)
    first = {w.name: w for w in mlp}["fused_matmul_add_relu"]
    assert json.loads(first.args_info_json)[0][2] == [8, 64]
    assert first.flops == pytest.approx(2 * 8 * 64 * 128 + 2 * 8 * 128, rel=0.01)
    _check_workloads(extract_workloads(convnet_bytes, None, cpu_target), CONVNET_TASKS)
    # same bytes, same keys: the database can find tasks again across calls and processes
    assert [w.shash for w in extract_workloads(mlp_bytes, None, cpu_target)] == [w.shash for w in mlp]


def test_hashes_are_what_the_compile_step_looks_up(
    mlp_bytes: bytes, convnet_bytes: bytes, cpu_target: dict[str, Any]
) -> None:
    """The fused functions the compile step queries are exactly the extracted workloads."""
    import tvm_ffi
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class RecordingDatabase(ms.database.PyDatabase):
        def __init__(self) -> None:
            super().__init__()
            self.inner = ms.database.MemoryDatabase()
            self.queried: list[str] = []

        def has_workload(self, mod: Any) -> bool:
            self.queried.append(str(tvm_ffi.structural_hash(mod)))
            return bool(self.inner.has_workload(mod))

        def commit_workload(self, mod: Any) -> Any:
            return self.inner.commit_workload(mod)

        def commit_tuning_record(self, record: Any) -> None:
            self.inner.commit_tuning_record(record)

        def get_top_k(self, workload: Any, top_k: int) -> list[Any]:
            return list(self.inner.get_top_k(workload, top_k))

        def get_all_tuning_records(self) -> list[Any]:
            return list(self.inner.get_all_tuning_records())

        def __len__(self) -> int:
            return len(self.inner)

    from tvm.target import Target

    from tuner.compile import build_relax
    from tuner.default_schedule import Fallback

    for content in (mlp_bytes, convnet_bytes):
        database = RecordingDatabase()
        build_relax(database, onnx_to_relax(content), Target(cpu_target), Fallback.NAIVE, {})
        assert sorted(database.queried) == sorted(w.shash for w in extract_workloads(content, None, cpu_target))


def test_identical_workloads_are_merged(cpu_target: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "x"
    for i in range(3):  # three 128→128 layers with different weights: one workload, weight 3
        inits += [
            numpy_helper.from_array(rng.standard_normal((128, 128)).astype(np.float32), f"w{i}"),
            numpy_helper.from_array(rng.standard_normal(128).astype(np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
            helper.make_node("Relu", [f"a{i}"], [f"h{i}"]),
        ]
        prev = f"h{i}"
    content = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 128])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [4, 128])],
        inits,
    )
    (only,) = extract_workloads(content, None, cpu_target)
    assert only.weight == 3 and only.name.startswith("fused_matmul")


def test_symbolic_batch_needs_shapes(make_models: Any, cpu_target: dict[str, Any]) -> None:
    content = make_models.mlp_model(batch="N").SerializeToString()
    with pytest.raises(BadInput) as info:
        inspect_onnx(content)
    message = info.value.detail
    assert "'x'" in message and "dimension 0" in message and "'N'" in message
    assert "input_shapes" in message and "--shape x=1,64" in message
    with pytest.raises(BadInput, match="symbolic"):
        extract_workloads(content, None, cpu_target)

    assert inspect_onnx(content, {"x": [4, 64]}).shapes == {"x": [4, 64]}
    workloads = extract_workloads(content, {"x": [4, 64]}, cpu_target)
    assert {w.name for w in workloads} == MLP_TASKS
    first = {w.name: w for w in workloads}["fused_matmul_add_relu"]
    assert json.loads(first.args_info_json)[0][2] == [4, 64]


def test_unknown_dim_and_dtypes() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [3])
    content = _model(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["ids"], ["z"])],
        [x, ids],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4]), helper.make_tensor_value_info("z", TensorProto.INT64, [3])],
    )
    with pytest.raises(BadInput, match="'x' dimension 0 is unknown.*--shape x=1,4"):
        inspect_onnx(content)
    resolved = inspect_onnx(content, {"x": [2, 4]})
    assert resolved.shapes == {"x": [2, 4], "ids": [3]}
    assert resolved.dtypes == {"x": "float32", "ids": "int64"}


def test_malformed_and_truncated(mlp_bytes: bytes, cpu_target: dict[str, Any]) -> None:
    with pytest.raises(BadInput, match="not a valid ONNX model.*Error parsing message"):
        inspect_onnx(b"\x08\x07garbage that is not protobuf \xff\xff\xff")
    with pytest.raises(BadInput, match="not a valid ONNX model.*Error parsing message"):
        extract_workloads(mlp_bytes[: len(mlp_bytes) // 2], None, cpu_target)
    with pytest.raises(BadInput, match="empty"):
        inspect_onnx(b"")
    with pytest.raises(BadInput, match="checker"):
        inspect_onnx(onnx.ModelProto(ir_version=8).SerializeToString())  # parses, but no graph/opset


def test_unsupported_op_and_bad_target(mlp_bytes: bytes, cpu_target: dict[str, Any]) -> None:
    content = _model(
        [helper.make_node("Celu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    )
    inspect_onnx(content)  # valid ONNX ...
    with pytest.raises(BadInput, match="TVM cannot convert.*Celu"):  # ... that TVM cannot import
        onnx_to_relax(content)
    with pytest.raises(BadInput, match="target"):
        extract_workloads(mlp_bytes, None, {"kind": "no-such-kind"})


def test_nothing_to_tune(cpu_target: dict[str, Any]) -> None:
    content = _model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    with pytest.raises(BadInput, match="nothing to tune"):
        extract_workloads(content, None, cpu_target)
    with pytest.raises(BadInput, match="must map input names"):
        inspect_onnx(content, [[2]])  # type: ignore[arg-type]



def _external(name: str) -> onnx.TensorProto:
    t = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[2], data_location=TensorProto.EXTERNAL)
    entry = t.external_data.add()
    entry.key, entry.value = "location", "secret.bin"
    return t


def test_external_data_in_functions_and_lying_attributes_is_refused() -> None:
    """Tensors hide in function bodies, training graphs and attributes whose type says they hold none."""
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "xy")
    lying = helper.make_node("Relu", ["x"], ["y"])
    attr = lying.attribute.add()
    attr.name, attr.type = "note", onnx.AttributeProto.INT
    attr.t.CopyFrom(_external("hidden"))
    body = helper.make_node("Constant", [], ["w"], value=_external("w"))
    function = helper.make_function("local", "F", ["x"], ["w"], [body], [helper.make_opsetid("", 17)])
    with_function = helper.make_model(
        helper.make_graph([helper.make_node("F", ["x"], ["y"], domain="local")], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        functions=[function],
    )
    training = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    training.training_info.add().initialization.CopyFrom(
        helper.make_graph([helper.make_node("Constant", [], ["t"], value=_external("t"))], "init", [], [])
    )
    plain = helper.make_model(helper.make_graph([lying], "g", [x], [y]))
    for model in (with_function, training, plain):
        with pytest.raises(BadInput, match="external file"):
            inspect_onnx(model.SerializeToString())


def test_declared_and_inferred_sizes_are_bounded() -> None:
    limits = IntakeLimits(max_tensor_elements=1000, max_dim=500)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    huge = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**20, 2**20])  # declared, no data
    declared = _model([helper.make_node("Add", ["x", "w"], ["y"])], [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [huge])
    with pytest.raises(BadInput, match=r"tensor\['w'\].*TUNEHUB_INTAKE_MAX_DIM"):
        inspect_onnx(declared, None, limits)
    shape = numpy_helper.from_array(np.array([40, 40], np.int64), "s")  # 1600 elements, only after inference
    fill = helper.make_node("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
    inferred = _model(
        [fill, helper.make_node("Add", ["x", "c"], ["y"])], [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [40, 40])], [shape]
    )
    with pytest.raises(BadInput, match=r"tensor\['c'\] = \[40, 40\] has 1.6e\+03 elements"):
        inspect_onnx(inferred, None, limits)
    inspect_onnx(inferred, None, IntakeLimits(max_tensor_elements=1600))
    with pytest.raises(BadInput, match="input_shapes.*over the limit of 1000"):
        inspect_onnx(_model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])]), {"x": [200, 8]}, limits)


def test_node_task_and_flop_limits(mlp_bytes: bytes, cpu_target: dict[str, Any]) -> None:
    with pytest.raises(BadInput, match="more than 2 nodes"):
        inspect_onnx(mlp_bytes, None, IntakeLimits(max_nodes=2))
    # at upload, from shapes alone: the largest node, fc2, is 2 x 8 x 128 x 128 = 262144 FLOPs
    inspect_onnx(mlp_bytes, None, IntakeLimits(max_task_flops=262144))
    with pytest.raises(BadInput, match="MatMul node 'fc2' takes 2.62e\\+05 floating-point operations.*TUNEHUB_INTAKE_MAX_TASK_FLOPS"):
        inspect_onnx(mlp_bytes, None, IntakeLimits(max_task_flops=262143))
    with pytest.raises(BadInput, match="3 tuning tasks, over the limit of 2"):
        extract_workloads(mlp_bytes, None, cpu_target, IntakeLimits(max_tasks=2))
    # ops the upload check does not estimate meet the limit on the extracted task's own FLOPs
    square = helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 64])
    elementwise = _model(
        [helper.make_node("Add", ["x", "x"], ["a"]), helper.make_node("Relu", ["a"], ["y"])],
        [square], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 64])],
    )
    with pytest.raises(BadInput, match="task fused_add_relu takes .* floating-point operations per call, over the limit"):
        extract_workloads(elementwise, None, cpu_target, IntakeLimits(max_task_flops=100))


def test_the_sandbox_answers_like_intake(mlp_bytes: bytes, cpu_target: dict[str, Any]) -> None:
    settings = Settings()
    assert inspect_in_sandbox(mlp_bytes, None, settings) == inspect_onnx(mlp_bytes)
    assert extract_in_sandbox(mlp_bytes, None, cpu_target, settings) == extract_workloads(mlp_bytes, None, cpu_target)
    with pytest.raises(BadInput, match="dimension 0 of 'x' is fixed at 8"):
        inspect_in_sandbox(mlp_bytes, {"x": [4, 64]}, settings)


def _slow_to_fold() -> bytes:
    """y = x + ConstantOfShape([1536, 1536]) @ ConstantOfShape([1536, 1536]): folding is 7 GFLOP of naive matmul."""
    shape = numpy_helper.from_array(np.array([1536, 1536], np.int64), "s")
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("ConstantOfShape", ["s"], ["a"], value=fill),
        helper.make_node("ConstantOfShape", ["s"], ["b"], value=fill),
        helper.make_node("MatMul", ["a", "b"], ["m"]),
        helper.make_node("Add", ["x", "m"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    return _model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1536, 1536])], [shape])


def test_the_sandbox_cpu_and_wall_limits_are_413(cpu_target: dict[str, Any]) -> None:
    """CPU seconds count from after TVM's import, so only the model's own work meets the limit."""
    with pytest.raises(TooLarge, match="more than 1 CPU seconds.*TUNEHUB_INTAKE_CPU_S"):
        extract_in_sandbox(_slow_to_fold(), None, cpu_target, Settings(intake_cpu_s=1))
    with pytest.raises(TooLarge, match="longer than 0.2 s.*TUNEHUB_INTAKE_WALL_S"):
        extract_in_sandbox(_slow_to_fold(), None, cpu_target, Settings(intake_wall_s=0.2))  # TVM's import alone takes longer


def test_the_sandbox_runs_a_bounded_number_at_once(mlp_bytes: bytes) -> None:
    """With every slot taken, a request waits its turn, then says busy; a freed slot serves it."""
    settings = Settings(intake_concurrency=1, intake_wall_s=0.3)
    slots = intake_slots(1)
    assert slots.acquire(timeout=60)
    try:
        with pytest.raises(Unavailable, match="busy.*TUNEHUB_INTAKE_CONCURRENCY"):
            inspect_in_sandbox(mlp_bytes, None, settings)
    finally:
        slots.release()
    assert inspect_in_sandbox(mlp_bytes, None, Settings(intake_concurrency=1)).shapes == {"x": [8, 64]}


def test_weights_marked_layout_free_as_tvm_prepack_pipeline_does(convnet_bytes: bytes, cpu_target: dict[str, Any]) -> None:
    """CPU tasks carry the weights' layout-free mark, structurally what TVM's own pass attaches, names kept."""
    import tvm
    import tvm_ffi
    from tvm import relax
    from tvm.relax import pipeline as relax_pipeline

    target = as_target(cpu_target)
    mod = onnx_to_relax(convnet_bytes)
    ours = fuse_for_tuning(mod, target)
    passes = [*relax_pipeline.library_dispatch_passes(target), relax.transform.ConvertLayout(CPU_CONV_LAYOUTS),
              relax.transform.LegalizeOps(),
              relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(), relax.transform.FuseOps(),
              relax.transform.FuseTIR(), relax.transform.AttachAttrLayoutFreeBuffers()]
    with target, tvm.transform.PassContext(opt_level=3):
        theirs = tvm.transform.Sequential(passes)(mod)

    def prim_funcs(m: Any) -> dict[str, Any]:
        return {g.name_hint: f for g, f in m.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}

    assert set(prim_funcs(ours)) == CONVNET_TASKS  # TVM's pass renames every function; ours keeps the names
    hashes = sorted(tvm_ffi.structural_hash(f) for f in prim_funcs(ours).values())
    assert hashes == sorted(tvm_ffi.structural_hash(f) for f in prim_funcs(theirs).values())
    conv = prim_funcs(ours)["fused_conv2d_add_relu"]
    assert list(conv.attrs["layout_free_buffers"]) == [1, 2]  # the weight and the bias, not the input
    cuda = fuse_for_tuning(mod, as_target({"kind": "cuda", "arch": "sm_80"}))
    assert all("layout_free_buffers" not in (f.attrs or {}) for f in prim_funcs(cuda).values())


def test_cpu_convolutions_run_channels_last(convnet_bytes: bytes, cpu_target: dict[str, Any]) -> None:
    """On CPU the conv reads NHWC (output channels innermost, where schedules vectorise); elsewhere ONNX's NCHW."""

    def conv_input_shape(target: dict[str, Any]) -> list[int]:
        conv = {w.name: w for w in extract_workloads(convnet_bytes, None, target)}["fused_conv2d_add_relu"]
        return json.loads(conv.args_info_json)[0][2]

    assert conv_input_shape(cpu_target) == [1, 32, 32, 3]
    assert conv_input_shape({"kind": "cuda", "arch": "sm_80"}) == [1, 3, 32, 32]
