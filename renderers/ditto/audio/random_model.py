"""A tiny random stand-in for Ditto's HuBERT ONNX, for tests: the same I/O names, and the
same number of output frames for an input length as HuBERT's conv front end.

    input_values (1, N) float32 -> encoding_out (floor((N - 400) / 320) + 1, 1024) float32

Graph: a Conv1d (kernel 400, stride 320) to a few channels, a MatMul to 1024, plus the
time-mean of the frames (so every output frame depends on the whole window, as a
transformer's does), then tanh. Written with the `onnx` package; no torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .framing import FEATURE_DIM, HUBERT_RECEPTIVE_FIELD, HUBERT_STRIDE
from .hubert import INPUT_NAME, OUTPUT_NAME

OPSET = 18


def write_random_hubert_onnx(
    path: Path | str,
    *,
    seed: int = 0,
    channels: int = 8,
    feature_dim: int = FEATURE_DIM,
) -> Path:
    """Write the random model to `path` (its folder created) and return the path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    conv_w = rng.standard_normal((channels, 1, HUBERT_RECEPTIVE_FIELD)).astype(np.float32)
    conv_w *= np.float32(4.0 / np.sqrt(HUBERT_RECEPTIVE_FIELD))
    conv_b = (0.1 * rng.standard_normal(channels)).astype(np.float32)
    proj = (rng.standard_normal((channels, feature_dim)) / np.sqrt(channels)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(feature_dim)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(conv_w, "conv_w"),
        numpy_helper.from_array(conv_b, "conv_b"),
        numpy_helper.from_array(proj, "proj"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", [INPUT_NAME, "axis1"], ["wave"]),  # (1, 1, N)
        helper.make_node(
            "Conv",
            ["wave", "conv_w", "conv_b"],
            ["conv"],
            kernel_shape=[HUBERT_RECEPTIVE_FIELD],
            strides=[HUBERT_STRIDE],
        ),  # (1, C, T)
        helper.make_node("Squeeze", ["conv", "axis0"], ["frames_ct"]),  # (C, T)
        helper.make_node("Transpose", ["frames_ct"], ["frames"], perm=[1, 0]),  # (T, C)
        helper.make_node("MatMul", ["frames", "proj"], ["local"]),  # (T, D)
        helper.make_node("ReduceMean", ["local", "axis0"], ["context"], keepdims=1),  # (1, D)
        helper.make_node("Add", ["local", "context"], ["mixed"]),
        helper.make_node("Add", ["mixed", "bias"], ["biased"]),
        helper.make_node("Tanh", ["biased"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "random_hubert",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, "samples"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["frames", feature_dim])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="avatar-agents random HuBERT stand-in",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
