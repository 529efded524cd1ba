"""Checks on an untrusted ONNX model before any TVM work: no external data, bounded sizes.

A tensor anywhere in an ONNX file (initializers, sparse initializers, any node's
tensor attributes such as a ``Constant``'s value, subgraphs of ``If``/``Loop``/
``Scan``, functions, training graphs) may say its bytes live in another file.
ONNX and TVM resolve such a path against the current directory, so a model
could make the service read its own files; every one is refused here, before
the ONNX checker (which looks the path up) and before anything is stored.

Sizes are bounded from the model's own declarations and ONNX shape inference
(with constant propagation, so ``ConstantOfShape`` of a constant shape is
seen), because constant folding would otherwise materialise the whole tensor.
The FLOPs of each MatMul, Gemm and Conv follow from the same shapes, so a
task no machine could tune is refused at upload; the extracted tasks' own
FLOPs are checked again after extraction.
"""

from __future__ import annotations

from collections.abc import Iterator
from math import prod
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from common.errors import BadInput
from common.shapes import check_bounds

if TYPE_CHECKING:
    import onnx

    from common.settings import Settings


class IntakeLimits(BaseModel):
    """Bounds on what one model may ask for (defaults match ``common.settings``)."""

    max_dim: int = 2**31 - 1
    max_tensor_elements: int = 2**28
    max_nodes: int = 100_000
    max_tasks: int = 1000
    max_task_flops: float = 1e13

    @classmethod
    def from_settings(cls, settings: Settings) -> IntakeLimits:
        return cls(
            max_dim=settings.intake_max_dim,
            max_tensor_elements=settings.intake_max_tensor_elements,
            max_nodes=settings.intake_max_nodes,
            max_tasks=settings.intake_max_tasks,
            max_task_flops=settings.intake_max_task_flops,
        )


def _graph_parts(graph: onnx.GraphProto) -> Iterator[tuple[str, Any]]:
    """("tensor" | "sparse" | "node", proto) for everything in a graph, subgraphs included."""
    for t in graph.initializer:
        yield "tensor", t
    for s in graph.sparse_initializer:
        yield "sparse", s
    yield from _node_parts(graph.node)


def _node_parts(nodes: Any) -> Iterator[tuple[str, Any]]:
    for node in nodes:
        yield "node", node
        yield from _attribute_parts(node.attribute)


def _attribute_parts(attributes: Any) -> Iterator[tuple[str, Any]]:
    # Fields are read whatever the attribute's declared type says: a lying type must not hide a tensor.
    for attr in attributes:
        if attr.HasField("t"):
            yield "tensor", attr.t
        for t in attr.tensors:
            yield "tensor", t
        if attr.HasField("sparse_tensor"):
            yield "sparse", attr.sparse_tensor
        for s in attr.sparse_tensors:
            yield "sparse", s
        if attr.HasField("g"):
            yield from _graph_parts(attr.g)
        for g in attr.graphs:
            yield from _graph_parts(g)


def model_parts(model: onnx.ModelProto) -> Iterator[tuple[str, Any]]:
    """Every tensor, sparse tensor and node in the model: main graph, functions, training graphs."""
    yield from _graph_parts(model.graph)
    for function in model.functions:
        yield from _node_parts(function.node)
        yield from _attribute_parts(function.attribute_proto)
    for info in model.training_info:
        yield from _graph_parts(info.initialization)
        yield from _graph_parts(info.algorithm)


def _is_external(tensor: onnx.TensorProto) -> bool:
    import onnx

    return tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0


def check_model(model: onnx.ModelProto, limits: IntakeLimits) -> None:
    """Refuse external data anywhere, too many nodes, and tensors whose declared size is over the limits."""
    nodes = 0
    for kind, part in model_parts(model):
        if kind == "node":
            nodes += 1
            if nodes > limits.max_nodes:
                raise BadInput(f"the model has more than {limits.max_nodes} nodes (TUNEHUB_INTAKE_MAX_NODES)")
            continue
        tensors = [part] if kind == "tensor" else [part.values, part.indices]
        for tensor in tensors:
            if _is_external(tensor):
                raise BadInput(
                    f"tensor {tensor.name or '(unnamed)'!r} keeps its data in an external file; tunehub never opens "
                    "files named by a model: upload a self-contained file "
                    "(onnx.save_model(model, path, save_as_external_data=False))"
                )
        dims = list(part.dims)
        check_bounds({part.values.name if kind == "sparse" else part.name: dims}, **_bounds(limits), what="tensor")


def _bounds(limits: IntakeLimits) -> dict[str, int]:
    return {"max_dim": limits.max_dim, "max_elements": limits.max_tensor_elements}


def check_inferred(model: onnx.ModelProto, shapes: dict[str, list[int]], limits: IntakeLimits) -> None:
    """Bound every intermediate and output tensor whose shape ONNX inference can derive from ``shapes``.

    The graph's inputs are set to ``shapes`` first. Where inference fails the
    process's memory limit is the remaining guard.
    """
    import onnx

    check_bounds(shapes, **_bounds(limits), what="input_shapes")
    for vi in model.graph.input:
        if vi.name in shapes and vi.type.WhichOneof("value") == "tensor_type":
            shape = vi.type.tensor_type.shape
            shape.ClearField("dim")
            for d in shapes[vi.name]:
                shape.dim.add().dim_value = d
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001  (inference is advisory here; conversion reports real errors)
        return
    known: dict[str, list[int]] = {t.name: list(t.dims) for t in inferred.graph.initializer}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if vi.type.WhichOneof("value") != "tensor_type" or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim if d.HasField("dim_value")]
        if dims and (max(dims) > limits.max_dim or prod(dims) > limits.max_tensor_elements):
            check_bounds({vi.name: dims}, **_bounds(limits), what="tensor")
        if len(dims) == len(vi.type.tensor_type.shape.dim):
            known[vi.name] = dims
    for node in inferred.graph.node:
        flops = _node_flops(node, known)
        if flops is not None and flops > limits.max_task_flops:
            raise BadInput(
                f"{node.op_type} node {node.name or node.output[0]!r} takes {flops:.3g} floating-point operations "
                f"per call, over the limit of {limits.max_task_flops:.3g} (TUNEHUB_INTAKE_MAX_TASK_FLOPS)"
            )


def _node_flops(node: onnx.NodeProto, known: dict[str, list[int]]) -> float | None:
    """Multiply-adds x 2 of a MatMul, Gemm or Conv whose shapes are known; None for anything else."""
    shapes = [known.get(name) for name in [*node.input[:2], *node.output[:1]]]
    if len(shapes) < 3 or any(not s for s in shapes):
        return None
    a, w, out = shapes
    assert a is not None and w is not None and out is not None
    if node.op_type == "MatMul":
        reduce = a[-1]
    elif node.op_type == "Gemm":
        trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
        reduce = a[0] if trans_a else a[-1]
    elif node.op_type == "Conv":
        reduce = prod(w[1:])  # input channels per group x kernel window
    else:
        return None
    return 2.0 * prod(out) * reduce
