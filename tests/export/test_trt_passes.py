"""The tensorrt profile's rewrites compute the same outputs as the graphs they replace, and the rule check finds
what TensorRT's parser would refuse."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dfq_deploy.errors import ExportError
from dfq_deploy.export.ort_passes import relu_int8_to_uint8
from dfq_deploy.export.passes import requantize_grid_preserving_ops
from dfq_deploy.export.trt_passes import (UnrepresentableActivation, activations_to_signed_float_clip,
                                          fold_weight_clips_to_float_qdq, int32_bias_to_float)
from dfq_deploy.export.trt_rules import check_tensorrt_rules

from .test_passes import _run

S = 0.07


def _model(act_dtype=np.int8, lo=-8, hi=7, relu=False, clip=True, maxpool=False, residual=None):
    """x -> [Relu] -> Q(act) -> [Clip] -> DQ -> [MaxPool] -> Conv(int8 w -> Clip -> DQ axis 0, int32 bias) [-> Add]
    (2 -> 2 channels, so the Conv output can be added to its input)"""
    rng = np.random.default_rng(0)
    w = rng.integers(-9, 10, size=(2, 2, 3, 3)).astype(np.int8)  # beyond the Clip: the fold must clip
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (np.array(S, np.float32), "s"), (np.array(0, act_dtype), "zp"),
        (np.array(lo, act_dtype), "lo"), (np.array(hi, act_dtype), "hi"),
        (w, "w"), (np.array(-7, np.int8), "wlo"), (np.array(7, np.int8), "whi"),
        (np.array([0.02, 0.05], np.float32), "ws"), (np.zeros(2, np.int8), "wzp"),
        (np.array([300, -41], np.int32), "b"), (np.array([0.02, 0.05], np.float32) * S, "bs"),
        (np.zeros(2, np.int32), "bzp")]]
    nodes, src = [], "x"
    if relu:
        nodes.append(helper.make_node("Relu", ["x"], ["r"]))
        src = "r"
    nodes.append(helper.make_node("QuantizeLinear", [src, "s", "zp"], ["q"], name="act_q"))
    qsrc = "q"
    if clip:
        nodes.append(helper.make_node("Clip", ["q", "lo", "hi"], ["qc"], name="act_clip"))
        qsrc = "qc"
    nodes.append(helper.make_node("DequantizeLinear", [qsrc, "s", "zp"], ["xd"], name="act_dq"))
    conv_in = "xd"
    if maxpool:
        nodes.append(helper.make_node("MaxPool", ["xd"], ["mp"], kernel_shape=[2, 2], strides=[1, 1],
                                      pads=[0, 0, 1, 1]))
        conv_in = "mp"
    nodes += [helper.make_node("Clip", ["w", "wlo", "whi"], ["wc"], name="w_clip"),
              helper.make_node("DequantizeLinear", ["wc", "ws", "wzp"], ["wd"], axis=0, name="w_dq"),
              helper.make_node("DequantizeLinear", ["b", "bs", "bzp"], ["bd"], axis=0, name="b_dq"),
              helper.make_node("Conv", [conv_in, "wd", "bd"], ["y"], pads=[1, 1, 1, 1], name="conv")]
    out = "y"
    if residual:
        nodes.append(helper.make_node("Add", ["y", residual], ["z"], name="add"))
        out = "z"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 5, 5])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2, 2, 5, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _x():
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 5)).astype(np.float32) * 0.6
    x.flat[:6] = np.array([7.5, -8.5, 3.5, 0.5, 12.0, -20.0], np.float32) * S  # ties and far outside the range
    return x


def _ops(m):
    return [n.op_type for n in m.graph.node]


@pytest.mark.parametrize("dtype,lo,hi,relu", [(np.int8, -8, 7, False), (np.uint8, 0, 15, True),
                                              (np.int8, -128, 127, False)])
def test_tensorrt_rewrites_are_exact_and_pass_the_rule_check(dtype, lo, hi, relu):
    m, x = _model(dtype, lo, hi, relu=relu), _x()
    before = _run(m, x)[0]
    assert not check_tensorrt_rules(m).ok
    done = activations_to_signed_float_clip(m)
    assert done["activation_clips_moved_to_float"] == 1
    assert done["unsigned_activations_to_int8"] == (dtype == np.uint8)
    assert fold_weight_clips_to_float_qdq(m) == 1 and int32_bias_to_float(m) == 1
    onnx.checker.check_model(m, full_check=True)
    np.testing.assert_allclose(_run(m, x)[0], before, rtol=0, atol=1e-6)
    check = check_tensorrt_rules(m)
    assert check.ok, check.violations
    assert check.quantized_compute == ["conv"]
    # no integer Clip is left, and the only Clip left is a float one before QuantizeLinear
    clips = [n for n in m.graph.node if n.op_type == "Clip"]
    assert len(clips) == 1 and _ops(m).index("Clip") < _ops(m).index("QuantizeLinear")


def test_unsigned_8bit_codes_cannot_become_int8():
    m = _model(np.uint8, 0, 255, relu=True, clip=False)
    with pytest.raises(UnrepresentableActivation, match=r"\[0, 255\]"):
        activations_to_signed_float_clip(m)


def test_a_refused_graph_is_left_unchanged_and_the_error_is_typed():
    """The first activation chain could be rewritten, the second (unsigned 8-bit codes) cannot: the pass refuses
    before it changes anything, with an ExportError (exit code 5), not a ValueError."""
    m = _model(np.int8, -8, 7)
    m.graph.initializer.extend([numpy_helper.from_array(np.array(S, np.float32), "s2"),
                                numpy_helper.from_array(np.array(0, np.uint8), "zp2")])
    m.graph.node.extend([helper.make_node("QuantizeLinear", ["y", "s2", "zp2"], ["yq"], name="out_q"),
                         helper.make_node("DequantizeLinear", ["yq", "s2", "zp2"], ["yd"], name="out_dq")])
    m.graph.output[0].name = "yd"
    before = m.SerializeToString()
    with pytest.raises(ExportError, match="out_q"):
        activations_to_signed_float_clip(m)
    assert m.SerializeToString() == before


def test_relu_int8_becomes_uint8_exactly():
    m, x = _model(np.int8, -128, 127, relu=True, clip=False), _x()
    before = _run(m, x)[0]
    assert relu_int8_to_uint8(m) == 1
    onnx.checker.check_model(m, full_check=True)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear")
    assert inits[q.input[2]].dtype == np.uint8
    clip = next(n for n in m.graph.node if n.op_type == "Clip" and n.input[0] == q.output[0])
    assert (int(inits[clip.input[1]]), int(inits[clip.input[2]])) == (0, 127)  # int8's ceiling kept
    np.testing.assert_array_equal(_run(m, x)[0], before)


def test_maxpool_output_is_requantized_exactly():
    m, x = _model(np.uint8, 0, 15, relu=True, maxpool=True), _x()
    before = _run(m, x)[0]
    assert not check_tensorrt_rules(m).ok  # the Conv reads a MaxPool, not a DequantizeLinear
    assert requantize_grid_preserving_ops(m) == 1
    np.testing.assert_array_equal(_run(m, x)[0], before)
    activations_to_signed_float_clip(m)
    fold_weight_clips_to_float_qdq(m)
    int32_bias_to_float(m)
    np.testing.assert_allclose(_run(m, x)[0], before, rtol=0, atol=1e-6)
    assert check_tensorrt_rules(m).ok


def _rules(m):
    return {v.rule for v in check_tensorrt_rules(m).violations}


def test_rule_check_names_each_broken_rule():
    assert {"int32-bias", "integer-op", "dq-input"} <= _rules(_model())
    m = _model(np.uint8, 0, 15, relu=True)
    assert "int8-only" in _rules(m)
    # residual Add: one input dequantized (the block input) and one not (the Conv output): TensorRT #1992
    m, x = _model(residual="xd"), _x()
    for f in (activations_to_signed_float_clip, fold_weight_clips_to_float_qdq, int32_bias_to_float):
        f(m)
    assert _rules(m) == {"residual-add"}
    _run(m, x)  # the graph itself is valid
    m = _model(residual="x")
    for f in (activations_to_signed_float_clip, fold_weight_clips_to_float_qdq, int32_bias_to_float):
        f(m)
    assert _rules(m) == set()  # neither input dequantized: an all-float Add is not a Q/DQ mistake
    # per-channel weight scales on the wrong axis
    m = _model()
    for f in (activations_to_signed_float_clip, fold_weight_clips_to_float_qdq, int32_bias_to_float):
        f(m)
    next(n for n in m.graph.node if n.name == "w_dq").attribute[0].i = 1
    assert "per-channel-axis" in _rules(m)
    # a non-zero zero point
    m = _model()
    zp = next(t for t in m.graph.initializer if t.name == "zp")
    zp.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), "zp"))
    assert "zero-point" in _rules(m)
