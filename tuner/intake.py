"""Model intake: ONNX bytes → checked inputs → Relax module → tuning workloads.

The workloads are the fused TIR PrimFuncs that MetaSchedule tunes, keyed by the
structural hash that the compile step (:func:`tuner.compile.build_relax`) later
looks up in a database. For those keys to match, both run :func:`fuse_for_tuning`:
the fusion passes ``ms.relax_integration.compile_relax`` runs before
``MetaScheduleApplyDatabase`` (TVM 0.27: the target's library-dispatch passes,
LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR, under ``with
target, PassContext(opt_level=3)``), plus the layout-free mark on CPU weights.
``tests/tuner/test_intake.py`` checks the match against the compile step itself.

Every problem with the uploaded model is a :class:`common.errors.BadInput`
whose message says what is wrong and, where it can, what to do. The model is
untrusted: :mod:`tuner.intake_checks` refuses external data and bounds sizes
before the checker or TVM see it, and the service runs all of this in the
limited child process of :mod:`tuner.intake_sandbox`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.errors import BadInput
from tuner.intake_checks import IntakeLimits, check_inferred, check_model

if TYPE_CHECKING:
    import onnx
    from tvm.ir import IRModule

# TVM errors can carry long backtraces; a person needs the first lines.
_MAX_REASON = 2000

InputShapes = Mapping[str, Sequence[int]]


@dataclass(frozen=True)
class ModelInputs:
    """The concrete inputs of a model, in the graph's order."""

    shapes: dict[str, list[int]]
    dtypes: dict[str, str]  # numpy dtype names, e.g. "float32", "int64"

    @property
    def names(self) -> list[str]:
        return list(self.shapes)


@dataclass(frozen=True)
class ExtractedWorkload:
    """One tuning task of a model: a fused TIR workload and how often the model runs it."""

    name: str  # MetaSchedule's task name, e.g. "fused_matmul_add_relu"
    weight: int  # calls per model invocation (identical workloads merged)
    shash: str  # str(tvm_ffi.structural_hash(mod)): the JSONDatabase key
    mod_json: str  # tvm.ir.save_json(IRModule{"main": PrimFunc})
    args_info_json: str  # MetaSchedule ArgInfo JSON list
    flops: float | None  # estimated floating-point operations of one call


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= _MAX_REASON else text[:_MAX_REASON] + " ..."


def _parse(content: bytes, limits: IntakeLimits) -> onnx.ModelProto:
    """Parse and check ONNX bytes; any failure is BadInput with the parser's reason."""
    import onnx

    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise BadInput(f"an ONNX model must be bytes, got {type(content).__name__}")
    if not content:
        raise BadInput("not a valid ONNX model: the file is empty")
    try:
        model = onnx.load_model_from_string(bytes(content))
    except Exception as exc:  # google.protobuf DecodeError and friends
        raise BadInput(f"not a valid ONNX model (truncated or not ONNX?): {_reason(exc)}") from None
    check_model(model, limits)  # before the checker: it looks external data paths up
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError
        raise BadInput(f"not a valid ONNX model: the ONNX checker says: {_reason(exc)}") from None
    return model


def _dtype_name(elem_type: int) -> str:
    import onnx

    try:
        import numpy as np

        return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)))
    except Exception:  # noqa: BLE001  (e.g. float8 kinds numpy lacks)
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _example(dims: list[Any]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "1" for d in dims) + "]"


def _check_user_shape(name: str, shape: Any) -> list[int]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise BadInput(f"input_shapes[{name!r}] must be a list of positive integers, got {shape!r}")
    dims = list(shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise BadInput(f"input_shapes[{name!r}] must be a list of positive integers, got {shape!r}")
    return dims


def _resolve_inputs(model: onnx.ModelProto, input_shapes: InputShapes | None, limits: IntakeLimits) -> ModelInputs:
    graph = model.graph
    weights = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    inputs = [vi for vi in graph.input if vi.name not in weights]
    if input_shapes is not None and not isinstance(input_shapes, Mapping):
        raise BadInput(f'input_shapes must map input names to shapes, e.g. {{"x": [1, 64]}}; got {input_shapes!r}')
    given = dict(input_shapes or {})
    unknown = sorted(set(given) - {vi.name for vi in inputs})
    if unknown:
        raise BadInput(
            f"input_shapes names {unknown} that are not inputs of the model; "
            f"its inputs are {[vi.name for vi in inputs]}"
        )

    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, str] = {}
    for vi in inputs:
        name = vi.name
        if vi.type.WhichOneof("value") != "tensor_type":
            raise BadInput(f"input {name!r} is a {vi.type.WhichOneof('value')}, not a tensor; only tensor inputs are supported")
        tensor = vi.type.tensor_type
        if tensor.elem_type == 0:
            raise BadInput(f"input {name!r} has no element type")
        dtypes[name] = _dtype_name(tensor.elem_type)
        # The model's own dims: an int, a symbol name, or None (unknown).
        declared: list[Any] | None = None
        if tensor.HasField("shape"):
            declared = []
            for d in tensor.shape.dim:
                if d.HasField("dim_value"):
                    declared.append(int(d.dim_value))
                elif d.HasField("dim_param"):
                    declared.append(d.dim_param)
                else:
                    declared.append(None)

        if name in given:
            dims = _check_user_shape(name, given[name])
            if declared is not None:
                if len(dims) != len(declared):
                    raise BadInput(
                        f"input_shapes[{name!r}] = {dims} has rank {len(dims)}, "
                        f"but the model declares {name!r} with rank {len(declared)}: {declared}"
                    )
                for axis, (want, got) in enumerate(zip(declared, dims, strict=True)):
                    if isinstance(want, int) and want > 0 and want != got:
                        raise BadInput(
                            f"input_shapes[{name!r}] = {dims} conflicts with the model: "
                            f"dimension {axis} of {name!r} is fixed at {want}"
                        )
            shapes[name] = dims
            continue

        how = "pass its shape in input_shapes, e.g. {%r: %s} (CLI: --shape %s=%s)"
        if declared is None:
            raise BadInput(f"input {name!r} has no declared shape (unknown rank); " + how % (name, "[1, ...]", name, "1,..."))
        for axis, d in enumerate(declared):
            if not (isinstance(d, int) and d > 0):
                what = f"is symbolic ({d!r})" if isinstance(d, str) else "is unknown" if d is None else f"is {d}"
                example = _example(declared)
                raise BadInput(
                    f"input {name!r} dimension {axis} {what}; tuning needs concrete shapes: "
                    + how % (name, example, name, example.strip("[]").replace(" ", ""))
                )
        shapes[name] = list(declared)
    check_inferred(model, shapes, limits)
    return ModelInputs(shapes=shapes, dtypes=dtypes)


def inspect_onnx(
    content: bytes, input_shapes: InputShapes | None = None, limits: IntakeLimits | None = None
) -> ModelInputs:
    """Parse and check an ONNX model and resolve every graph input to a concrete shape.

    Inputs that are initializers (weights) are not inputs. ``input_shapes`` fills
    in symbolic or unknown dimensions; it may also restate fixed ones, which must
    agree with the model. Raises BadInput for malformed or truncated bytes, a
    model the ONNX checker rejects, a dimension left unresolved, or names in
    ``input_shapes`` the model does not have, external data, or sizes over ``limits``.
    """
    limits = limits or IntakeLimits()
    return _resolve_inputs(_parse(content, limits), input_shapes, limits)


def _to_relax(model: onnx.ModelProto, inputs: ModelInputs) -> IRModule:
    from tvm.relax.frontend.onnx import from_onnx

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # from_onnx re-runs the checker and warns; we already checked
            return from_onnx(model, shape_dict=dict(inputs.shapes), keep_params_in_input=False)
    except Exception as exc:  # OpNotImplemented, ValueError, TVMError ...
        raise BadInput(f"TVM cannot convert this ONNX model to Relax: {type(exc).__name__}: {_reason(exc)}") from None


def convert_onnx(
    content: bytes, input_shapes: InputShapes | None = None, limits: IntakeLimits | None = None
) -> tuple[ModelInputs, IRModule]:
    """:func:`inspect_onnx` and :func:`onnx_to_relax` in one parse."""
    limits = limits or IntakeLimits()
    model = _parse(content, limits)
    inputs = _resolve_inputs(model, input_shapes, limits)
    return inputs, _to_relax(model, inputs)


def onnx_to_relax(
    content: bytes, input_shapes: InputShapes | None = None, limits: IntakeLimits | None = None
) -> IRModule:
    """The model as a Relax IRModule with weights bound as constants; ``main`` takes the inputs in graph order."""
    return convert_onnx(content, input_shapes, limits)[1]


def as_target(target: Mapping[str, Any] | Any) -> Any:
    """A ``tvm.target.Target`` from a target JSON dict; BadInput with TVM's reason if invalid."""
    from tvm.target import Target

    if isinstance(target, Target):
        return target
    from common.targets import canonical_target

    # BadInput for an unknown kind or option; the canonical form has the kind's defaults filled in.
    return Target(canonical_target(dict(target))[0])


CPU_CONV_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "HWIO"]}
"""Data and kernel layouts of 2-D convolutions compiled for CPU (ONNX gives NCHW, OIHW)."""


def fuse_for_tuning(mod: IRModule, target: Mapping[str, Any] | Any) -> IRModule:
    """Run the fusion half of the compile pipeline, so task hashes match its lookups.

    On CPU, convolutions run channels-last (:data:`CPU_CONV_LAYOUTS`): the output
    channel is the innermost axis, which the schedules vectorise; ONNX's NCHW
    leaves only the image width there (8 floats in a late ResNet stage, half an
    AVX-512 register). The transposes land at the network's edges, and the
    weights' are folded at compile time.

    On CPU the weights (constants) are marked layout-free first, as TVM's
    ``static_shape_tuning_pipeline(cpu_weight_prepack=True)`` does: MetaSchedule's
    ``RewriteLayout`` then tiles each weight for its kernel and the compile step
    packs it once (:func:`tuner.compile.prepack_weights`) instead of every call
    reading the ONNX layout. The mark is part of each task's structural hash.
    """
    import tvm
    from tvm import relax
    from tvm.relax import pipeline as relax_pipeline

    tgt = as_target(target)
    try:
        dispatch = list(relax_pipeline.library_dispatch_passes(tgt))
    except (ValueError, AttributeError):  # compile_relax tolerates targets without dispatch passes too
        dispatch = []
    on_cpu = tgt.kind.name == "llvm"
    passes = [
        *dispatch,
        *([relax.transform.ConvertLayout(CPU_CONV_LAYOUTS)] if on_cpu else []),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
    with tgt, tvm.transform.PassContext(opt_level=3):
        fused = tvm.transform.Sequential(passes)(mod)
    return mark_layout_free_weights(fused) if on_cpu else fused


def _constant_arguments(mod: IRModule) -> dict[Any, set[int]]:
    """For each PrimFunc ``call_tir`` calls, the argument positions that are constants at every call."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    found: dict[Any, set[int]] = {}

    @relax.expr_functor.visitor
    class _Calls(relax.PyExprVisitor):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> None:
            if call.op.same_as(call_tir) and isinstance(call.args[1], relax.Tuple):
                consts = {i for i, a in enumerate(call.args[1].fields) if isinstance(a, tvm.ir.expr.Constant)}
                gvar = call.args[0]
                found[gvar] = found[gvar] & consts if gvar in found else consts
            super().visit_call_(call)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            _Calls().visit_expr(func)
    return found


def mark_layout_free_weights(mod: IRModule) -> IRModule:
    """Mark each PrimFunc's constant (weight) arguments ``layout_free_buffers``, names kept.

    What TVM's ``AttachAttrLayoutFreeBuffers`` attaches, without its renaming of
    every function (``fused_conv2d_add_relu`` → ``…_relu1``), so task names stay
    those of the fused model; the functions are structurally equal to TVM's, so
    records tuned with ``static_shape_tuning_pipeline(cpu_weight_prepack=True)``
    match. A function also called with a non-constant argument in that position
    is not marked there. Changes ``mod`` in place.
    """
    for gvar, positions in _constant_arguments(mod).items():
        func = mod[gvar]
        if "layout_free_buffers" not in (func.attrs or {}):
            mod[gvar] = func.with_attr("layout_free_buffers", sorted(positions))
    return mod


def _flops(mod: IRModule) -> float | None:
    try:
        from tvm.s_tir.analysis import estimate_tir_flops

        value = float(estimate_tir_flops(mod))
    except Exception:  # noqa: BLE001  (some PrimFuncs cannot be estimated; FLOPs are informative only)
        return None
    return value if value >= 0 else None


def extract_workloads(
    content: bytes, input_shapes: InputShapes | None, target: Mapping[str, Any], limits: IntakeLimits | None = None
) -> list[ExtractedWorkload]:
    """The model's tuning tasks for ``target``, identical workloads merged (weights added).

    In MetaSchedule's extraction order. Raises BadInput for any problem with the
    model or the target, for a model with no TIR functions at all, and for more
    tasks or a costlier task than ``limits`` allow.
    """
    limits = limits or IntakeLimits()
    from common.tvm_env import prepare_tvm
    from common.tvm_json import args_info_json, workload_hash, workload_to_json

    prepare_tvm(())  # install the tensor_intrin stub before MetaSchedule is imported
    from tvm.s_tir import meta_schedule as ms

    tgt = as_target(target)
    mod = onnx_to_relax(content, input_shapes, limits)
    try:
        tasks = ms.relax_integration.extract_tasks(fuse_for_tuning(mod, tgt), tgt)
    except BadInput:
        raise
    except Exception as exc:  # noqa: BLE001
        raise BadInput(f"TVM cannot split this model into tuning tasks for this target: {_reason(exc)}") from None

    if not tasks:
        raise BadInput("the model has nothing to tune: TVM lowers it to no TIR functions (only data movement?)")
    merged: dict[str, ExtractedWorkload] = {}
    for task in tasks:
        shash = workload_hash(task.mod)
        if shash in merged:
            old = merged[shash]
            merged[shash] = ExtractedWorkload(
                old.name, old.weight + int(task.weight), shash, old.mod_json, old.args_info_json, old.flops
            )
            continue
        merged[shash] = ExtractedWorkload(
            name=str(task.task_name),
            weight=int(task.weight),
            shash=shash,
            mod_json=workload_to_json(task.mod),
            args_info_json=args_info_json(task.mod),
            flops=_flops(task.mod),
        )
    _check_tasks(list(merged.values()), limits)
    return list(merged.values())


def _check_tasks(workloads: list[ExtractedWorkload], limits: IntakeLimits) -> None:
    if len(workloads) > limits.max_tasks:
        raise BadInput(f"the model splits into {len(workloads)} tuning tasks, over the limit of {limits.max_tasks} (TUNEHUB_INTAKE_MAX_TASKS)")
    for w in workloads:
        if w.flops is not None and w.flops > limits.max_task_flops:
            raise BadInput(
                f"task {w.name} takes {w.flops:.3g} floating-point operations per call, over the limit of "
                f"{limits.max_task_flops:.3g} (TUNEHUB_INTAKE_MAX_TASK_FLOPS)"
            )
