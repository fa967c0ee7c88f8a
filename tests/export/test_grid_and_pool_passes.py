"""The requantization after grid-preserving ops (Concat, reshapes, MaxPool) and the pools MLAS cannot run: each
rewrite computes the same outputs, and the rewritten graph runs where the original one failed or ran in float."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dfq_deploy.export.ort_passes import POOL_RATIO_RANGE, pools_outside_integer_range
from dfq_deploy.export.passes import REQUANT_SUFFIX, requantize_grid_preserving_ops


def _session(model, optimize):
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _const(name, value, dtype):
    return numpy_helper.from_array(np.array(value, dtype), name)


def _concat_conv_model(second_scale=0.1):
    """Two ``Q -> Clip -> DQ`` branches concatenated, then a QDQ Conv (its output quantized): an Inception block's
    join."""
    w = np.random.default_rng(0).integers(-7, 8, size=(3, 4, 1, 1)).astype(np.int8)
    inits = [_const("s1", 0.1, np.float32), _const("s2", second_scale, np.float32), _const("z", 0, np.uint8),
             _const("lo", 0, np.uint8), _const("hi", 15, np.uint8), numpy_helper.from_array(w, "w"),
             _const("ws", [0.05] * 3, np.float32), _const("wz", [0] * 3, np.int8)]
    nodes = []
    for k, s in (("a", "s1"), ("b", "s2")):
        nodes += [helper.make_node("QuantizeLinear", [f"x{k}", s, "z"], [f"q{k}"]),
                  helper.make_node("Clip", [f"q{k}", "lo", "hi"], [f"c{k}"]),
                  helper.make_node("DequantizeLinear", [f"c{k}", s, "z"], [f"d{k}"])]
    nodes += [helper.make_node("Concat", ["da", "db"], ["cat"], axis=1),
              helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
              helper.make_node("Conv", ["cat", "wd"], ["conv"]),
              helper.make_node("QuantizeLinear", ["conv", "s1", "z"], ["cq"]),
              helper.make_node("DequantizeLinear", ["cq", "s1", "z"], ["y"])]
    inputs = [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [2, 2, 4, 4]) for k in "ab"]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 4])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _feeds():
    rng = np.random.default_rng(1)
    return {k: rng.uniform(0, 1.6, (2, 2, 4, 4)).astype(np.float32) for k in ("xa", "xb")}


def _integer_convs(model) -> int:
    """QLinearConv nodes in ONNX Runtime's optimised graph."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(Path(d) / "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return sum(n.op_type == "QLinearConv" for n in onnx.load(so.optimized_model_filepath).graph.node)


def test_concat_of_one_grid_is_requantized_exactly_and_runs_integer():
    model = _concat_conv_model()
    before = _session(model, optimize=False).run(None, _feeds())[0]
    assert _integer_convs(model) == 0  # the Conv reads a Concat, not a DequantizeLinear: ONNX Runtime keeps it float
    assert requantize_grid_preserving_ops(model) == 1
    onnx.checker.check_model(model)
    assert any(n.name.endswith(REQUANT_SUFFIX) for n in model.graph.node)
    np.testing.assert_array_equal(_session(model, optimize=False).run(None, _feeds())[0], before)
    assert _integer_convs(model) == 1
    # the integer kernel rounds its exact sum, float QDQ its float32 sum: at most a rounding tie (one 0.1 step) apart
    assert np.abs(_session(model, optimize=True).run(None, _feeds())[0] - before).max() <= 0.1 + 1e-6


def test_concat_of_two_grids_is_left_alone():
    model = _concat_conv_model(second_scale=0.2)
    assert requantize_grid_preserving_ops(model) == 0  # no single grid to requantize on


def _pool_model(y_scale, pixels_side=1):
    inits = [_const("xs", 0.5, np.float32), _const("xz", 0, np.uint8), _const("ys", y_scale, np.float32),
             _const("yz", 0, np.uint8)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "xs", "xz"], ["dq"]),
             helper.make_node("GlobalAveragePool", ["dq"], ["p"]),
             helper.make_node("QuantizeLinear", ["p", "ys", "yz"], ["pq"]),
             helper.make_node("DequantizeLinear", ["pq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, pixels_side, pixels_side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_a_pool_mlas_cannot_run_becomes_a_float_mean_with_the_same_values():
    """A 1x1 map pooled onto a grid 1000x finer (ratio 1000 >= 256): ONNX Runtime fuses QLinearGlobalAveragePool
    and fails when the session runs; the rewritten graph runs and gives the float graph's values."""
    x = np.random.default_rng(0).uniform(0, 100, (2, 4, 1, 1)).astype(np.float32)
    model = _pool_model(0.0005)
    assert 0.5 / 0.0005 >= POOL_RATIO_RANGE[1]
    with pytest.raises(Exception, match="out of computation range"):
        _session(model, optimize=True).run(None, {"x": x})
    reference = _session(model, optimize=False).run(None, {"x": x})[0]
    assert pools_outside_integer_range(model) == 1
    assert [n.op_type for n in model.graph.node].count("ReduceMean") == 1
    np.testing.assert_array_equal(_session(model, optimize=True).run(None, {"x": x})[0], reference)


def test_a_pool_in_range_keeps_its_integer_kernel():
    model = _pool_model(0.01, pixels_side=2)  # ratio 0.5 / (0.01 * 4) = 12.5
    assert pools_outside_integer_range(model) == 0
    assert "GlobalAveragePool" in [n.op_type for n in model.graph.node]
