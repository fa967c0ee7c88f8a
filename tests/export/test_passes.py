"""Each graph rewrite must compute the same outputs as the graph it replaces."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from dfq_deploy.export.ort_passes import shift_signed_activations_to_uint8


def _run(model, x, optimize=False):
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _signed_chain_model(clip=True, extra_consumer=False):
    rng = np.random.default_rng(0)
    w = rng.integers(-7, 8, size=(4, 2, 3, 3)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.07, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
        numpy_helper.from_array(np.array(-8, np.int8), "lo"),
        numpy_helper.from_array(np.array(7, np.int8), "hi"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.full(4, 0.05, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(4, np.int8), "wzp"),
    ]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"])]
    src = "q"
    if clip:
        nodes.append(helper.make_node("Clip", ["q", "lo", "hi"], ["qc"]))
        src = "qc"
    nodes += [
        helper.make_node("DequantizeLinear", [src, "s", "zp"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wzp"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 5, 5])]
    if extra_consumer:
        nodes.append(helper.make_node("Cast", ["q"], ["qf"], to=TensorProto.FLOAT))
        outputs.append(helper.make_tensor_value_info("qf", TensorProto.FLOAT, [2, 2, 5, 5]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 5, 5])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_shift_is_exact_with_clip():
    x = (np.random.default_rng(1).standard_normal((2, 2, 5, 5)) * 0.6).astype(np.float32)
    m = _signed_chain_model(clip=True)
    before = _run(m, x)[0]
    assert shift_signed_activations_to_uint8(m) == 1
    onnx.checker.check_model(m, full_check=True)
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear")
    zp = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}[q.input[2]]
    assert zp.dtype == np.uint8 and int(zp) == 8  # shifted by the Clip's floor: 4-bit codes [-8, 7] -> [0, 15]
    clip = next(n for n in m.graph.node if n.op_type == "Clip")
    bounds = [int(numpy_helper.to_array(t)) for name in clip.input[1:] for t in m.graph.initializer if t.name == name]
    assert bounds == [0, 15]
    np.testing.assert_array_equal(_run(m, x)[0], before)
    np.testing.assert_allclose(_run(m, x, optimize=True)[0], before, atol=1e-5)


def test_shift_is_exact_without_clip_and_keeps_weights_int8():
    x = np.random.default_rng(2).standard_normal((2, 2, 5, 5)).astype(np.float32) * 5  # saturates too
    m = _signed_chain_model(clip=False)
    before = _run(m, x)[0]
    assert shift_signed_activations_to_uint8(m) == 1
    np.testing.assert_array_equal(_run(m, x)[0], before)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    assert inits["w"].dtype == np.int8


def test_chain_with_an_unknown_consumer_is_left_alone():
    m = _signed_chain_model(clip=True, extra_consumer=True)
    assert shift_signed_activations_to_uint8(m) == 0
