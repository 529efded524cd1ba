"""Build the two small real ONNX models the demo and the tests use.

    python examples/make_models.py [outdir]      # default: the folder of this script

- ``mlp.onnx``: x[8, 64] → MatMul+Add+Relu 64→128 → MatMul+Add+Relu 128→128 → Gemm 128→10
- ``convnet.onnx``: x[1, 3, 32, 32] → Conv 3→16 3×3 pad 1 + Relu → MaxPool 2 →
  Conv 16→32 3×3 pad 1 + Relu → GlobalAveragePool → Flatten → Gemm 32→10

Opset 17, float32 weights drawn from a fixed seed, so the files are the same on
every run (and so are their sha256 and their workloads). Each model splits into a
handful of tasks that tune in seconds on two cores.

``mlp_model(batch="N")`` gives the same MLP with a symbolic batch dimension (tests).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
SEED = 20261128


def _weights(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _finish(graph: onnx.GraphProto, name: str) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tunehub-examples")
    model.ir_version = 8  # readable by any onnx/onnxruntime of the last few years
    model.doc_string = f"tunehub example model '{name}', seed {SEED}"
    onnx.checker.check_model(model, full_check=True)
    return model


def mlp_model(batch: int | str = 8) -> onnx.ModelProto:
    """Three dense layers; ``batch`` may be a symbol such as ``"N"``."""
    rng = np.random.default_rng(SEED)
    w1, b1 = _weights(rng, (64, 128), 64), _weights(rng, (128,), 64)
    w2, b2 = _weights(rng, (128, 128), 128), _weights(rng, (128,), 128)
    w3, b3 = _weights(rng, (10, 128), 128), _weights(rng, (10,), 128)  # Gemm with transB=1
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in ((w1, "fc1.w"), (b1, "fc1.b"), (w2, "fc2.w"), (b2, "fc2.b"), (w3, "fc3.w"), (b3, "fc3.b"))
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "fc1.w"], ["h1m"], name="fc1"),
        helper.make_node("Add", ["h1m", "fc1.b"], ["h1a"], name="fc1_bias"),
        helper.make_node("Relu", ["h1a"], ["h1"], name="relu1"),
        helper.make_node("MatMul", ["h1", "fc2.w"], ["h2m"], name="fc2"),
        helper.make_node("Add", ["h2m", "fc2.b"], ["h2a"], name="fc2_bias"),
        helper.make_node("Relu", ["h2a"], ["h2"], name="relu2"),
        helper.make_node("Gemm", ["h2", "fc3.w", "fc3.b"], ["y"], name="fc3", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        initializer=inits,
    )
    return _finish(graph, "mlp")


def convnet_model() -> onnx.ModelProto:
    """Two conv blocks, global pooling and a dense head."""
    rng = np.random.default_rng(SEED + 1)
    c1w, c1b = _weights(rng, (16, 3, 3, 3), 27), _weights(rng, (16,), 27)
    c2w, c2b = _weights(rng, (32, 16, 3, 3), 144), _weights(rng, (32,), 144)
    fw, fb = _weights(rng, (10, 32), 32), _weights(rng, (10,), 32)
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in ((c1w, "conv1.w"), (c1b, "conv1.b"), (c2w, "conv2.w"), (c2b, "conv2.b"), (fw, "fc.w"), (fb, "fc.b"))
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv1.w", "conv1.b"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    return _finish(graph, "convnet")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    outdir = Path(args[0]) if args else Path(__file__).resolve().parent
    outdir.mkdir(parents=True, exist_ok=True)
    for name, model in (("mlp", mlp_model()), ("convnet", convnet_model())):
        path = outdir / f"{name}.onnx"
        path.write_bytes(model.SerializeToString())
        print(f"{path}  {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
