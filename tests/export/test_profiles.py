"""Both export profiles of one trained model compute the model's function; each meets its runtime's rules."""

import json

import numpy as np
import onnx
import pytest
import torch

from dfq_deploy.errors import ExportError
from dfq_deploy.export import check_tensorrt_rules, export_onnx, layer_bits, ort_kernel_census
from dfq_deploy.export.graph import Graph
from dfq_deploy.export.inspect import output_quant_step
from dfq_deploy.quant import QuantScheme, calibrate, quantize_model
from dfq_deploy.runtimes.ort import OnnxRuntime
from dfq_deploy.runtimes.torch_ref import TorchRuntime


def _student(scheme):
    from dfq_deploy.models import build_model

    torch.manual_seed(0)
    teacher = build_model("resnet8", width=8).eval()
    q = quantize_model(teacher, scheme)
    calibrate(q, [torch.randn(64, 1, 28, 28) for _ in range(2)])
    return q.eval()


def _max_steps(q, path, x):
    with TorchRuntime(q) as t, OnnxRuntime(path) as o:
        ref, out = t.infer(x), o.infer(x)
    return np.abs(ref - out).max() / output_quant_step(path), (ref.argmax(1) == out.argmax(1)).mean()


@pytest.mark.parametrize("tag", ["W8A8", "W4A4", "W2A2"])
def test_both_profiles_compute_the_trained_function(tmp_path, tag):
    q = _student(QuantScheme.from_tag(tag, trt_compatible=True))
    x = np.random.default_rng(0).standard_normal((128, 1, 28, 28)).astype(np.float32)
    ort_res = export_onnx(q, tmp_path / "ort.onnx", (1, 28, 28), profile="onnxruntime")
    trt_res = export_onnx(q, tmp_path / "trt.onnx", (1, 28, 28), profile="tensorrt")
    census = ort_kernel_census(ort_res.path)
    assert census.all_integer, census.float_compute
    assert census.integer_compute == len(census.integer_nodes) - census.op_counts.get("QLinearAdd", 0)
    assert check_tensorrt_rules(str(trt_res.path)).ok
    assert not check_tensorrt_rules(str(ort_res.path)).ok  # uint8 and int32 bias: not for TensorRT
    for path in (ort_res.path, trt_res.path):
        steps, agree = _max_steps(q, path, x)
        assert steps <= 1.001 and agree >= 0.99, (path.name, steps, agree)


def test_uint8_activations_are_refused_for_tensorrt_with_the_fix(tmp_path):
    q = _student(QuantScheme.from_tag("W8A8"))  # not trt_compatible: ReLU outputs are uint8 0..255
    with pytest.raises(ExportError, match="--target tensorrt"):
        export_onnx(q, tmp_path / "trt.onnx", (1, 28, 28), profile="tensorrt")
    assert list(tmp_path.iterdir()) == []


def test_trt_compatible_changes_only_8bit_relu_quantizers():
    import brevitas.nn as qnn

    def relu_signs(scheme):
        return {m.act_quant.is_signed for m in _student(scheme).modules() if isinstance(m, qnn.QuantReLU)}

    assert relu_signs(QuantScheme.from_tag("W8A8")) == {False}
    assert relu_signs(QuantScheme.from_tag("W8A8", trt_compatible=True)) == {True}
    assert relu_signs(QuantScheme.from_tag("W4A4", trt_compatible=True)) == {False}


def test_layer_bits_are_read_from_the_graph_and_stored(tmp_path):
    q = _student(QuantScheme(4, 3, first_last_bits=8))
    res = export_onnx(q, tmp_path / "m.onnx", (1, 28, 28), profile="tensorrt")
    model = onnx.load(str(res.path))
    stored = json.loads({p.key: p.value for p in model.metadata_props}["dfq_deploy.layer_bits"])
    names = list(stored)
    # 8-bit inputs: 7-bit weights in the portable scheme (no 16-bit pair sum can saturate)
    assert stored[names[0]] == {"weight": 7, "input": 8} and stored[names[-1]] == {"weight": 7, "input": 8}
    assert all(stored[n] == {"weight": 4, "input": 3} for n in names[1:-1])
    assert layer_bits(model) != stored  # the tensorrt rewrite moved the Clips: bits had to be read before it


@pytest.mark.parametrize("tag", ["W8A8", "W4A4"])
def test_pooled_features_are_quantized_before_flatten_and_nothing_changes(tmp_path, tag):
    """The onnxruntime profile repeats the classifier input's Q -> DQ right after the GlobalAveragePool (issue 14),
    so ONNX Runtime pools with QLinearGlobalAveragePool as quantize_static graphs do. The pair must change no
    output: the graph with it bypassed gives the same logits, bit for bit, unoptimised."""
    import onnxruntime as ort

    from dfq_deploy.export.passes import REQUANT_SUFFIX

    q = _student(QuantScheme.from_tag(tag))
    res = export_onnx(q, tmp_path / "m.onnx", (1, 28, 28), profile="onnxruntime")
    assert res.passes["pool_outputs_quantized"] == 1
    assert ort_kernel_census(res.path).op_counts.get("QLinearGlobalAveragePool") == 1
    model = onnx.load(str(res.path))
    pool = next(n for n in model.graph.node if n.op_type == "GlobalAveragePool")
    quant = next(n for n in model.graph.node if pool.output[0] in n.input and n.op_type == "QuantizeLinear")
    assert quant.name.endswith(REQUANT_SUFFIX)  # the layer-local check skips it
    dequant = next(n for n in model.graph.node if quant.output[0] in n.input)
    flatten = next(n for n in model.graph.node if dequant.output[0] in n.input)
    flatten.input[0] = pool.output[0]  # bypass the pair
    bypassed = tmp_path / "bypassed.onnx"
    onnx.save(model, str(bypassed))

    def run(path):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(1).standard_normal((256, 1, 28, 28)).astype(np.float32) * 2
        return s.run(None, {s.get_inputs()[0].name: x})[0]

    with_pair, without = run(res.path), run(bypassed)
    assert np.array_equal(with_pair, without) and np.abs(without).max() > 0


def _run_ort(path, x, level):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = level
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("tag", ["W8A8", "W4A4"])
def test_first_conv_input_channels_are_padded_to_four_and_nothing_changes(tmp_path, tag, monkeypatch):
    """The onnxruntime profile pads a 1-channel first convolution to 4 channels (issue 14: MLAS' symmetric integer
    convolution needs a multiple of 4). The new channels are zero-point codes times zero-point weights: the logits
    must equal those of the unpadded export bit for bit, unoptimised and as the fused integer kernels."""
    import onnxruntime as ort

    from dfq_deploy.export import onnx_export

    q = _student(QuantScheme.from_tag(tag))
    res = export_onnx(q, tmp_path / "padded.onnx", (1, 28, 28), profile="onnxruntime")
    assert res.passes["conv_input_channels_padded"] == 1
    monkeypatch.setattr(onnx_export, "pad_conv_input_channels", lambda model: 0)
    plain = export_onnx(q, tmp_path / "plain.onnx", (1, 28, 28), profile="onnxruntime").path

    model = onnx.load(str(res.path))
    G = Graph(model)
    pad = next(n for n in model.graph.node if n.op_type == "Pad")
    dq = G.consumers[pad.output[0]][0]
    conv = G.consumers[dq.output[0]][0]
    assert (dq.op_type, conv.op_type) == ("DequantizeLinear", "Conv")
    assert G.const(pad.input[0]) is None and G.producer[pad.input[0]].op_type == "QuantizeLinear"
    assert list(G.const(pad.input[1])) == [0, 0, 0, 0, 0, 3, 0, 0] and pad.input[2] == dq.input[2]
    dq_w = G.producer[conv.input[1]]
    src = G.producer.get(dq_w.input[0])
    w = G.const(src.input[0] if src is not None else dq_w.input[0])
    assert w.shape[1] == 4 and np.all(w[:, 1:] == 0) and np.any(w[:, 0] != 0)
    census = ort_kernel_census(res.path)
    assert census.all_integer and census.op_counts["QLinearConv"] == ort_kernel_census(plain).op_counts["QLinearConv"]
    assert layer_bits(model) == layer_bits(onnx.load(str(plain)))

    x = np.random.default_rng(2).standard_normal((64, 1, 28, 28)).astype(np.float32) * 2
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        padded, unpadded = _run_ort(res.path, x, level), _run_ort(plain, x, level)
        assert np.array_equal(padded, unpadded) and np.abs(unpadded).max() > 0


def test_a_first_conv_with_uint8_weights_is_not_padded(tmp_path):
    """A portable export of a model trained with full 8-bit weights after 8-bit inputs stores those layers' weights
    as uint8 (exact without VNNI; the safety net); MLAS' symmetric kernel, which the padding is for, takes int8
    weights only, so that first convolution is left unpadded."""
    q = _student(QuantScheme.from_tag("W4A4", portable=False))
    res = export_onnx(q, tmp_path / "portable.onnx", (1, 28, 28), profile="onnxruntime", portable=True)
    assert res.passes["weights_moved_to_uint8"] == 2 and res.passes["conv_input_channels_padded"] == 0
    model = onnx.load(str(res.path))
    G = Graph(model)
    first = next(n for n in model.graph.node if n.op_type == "Conv")
    w_dq = G.producer[first.input[1]]
    assert G.const(w_dq.input[2]).dtype == np.uint8 and not any(n.op_type == "Pad" for n in model.graph.node)
    assert ort_kernel_census(res.path).all_integer


@pytest.mark.parametrize("zp_shape", [(), (1,)])
def test_channel_padding_keeps_a_nonzero_input_zero_point_and_skips_aligned_convs(tmp_path, zp_shape):
    """A hand-built QDQ graph: a 3-channel convolution with input zero point 37 (a scalar, or a 1-element vector,
    which ``Pad`` does not take as its value) and per-channel weight scales is padded to 4 channels with the same
    outputs; a 4-channel one after it is left alone. Weight codes within +-63 (the portable range after 8-bit
    inputs), so the integer kernels are exact on CPUs without VNNI too and the comparison holds on every CPU."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from dfq_deploy.export.ort_passes import pad_conv_input_channels

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "xs": np.array(0.02, np.float32), "xz": np.full(zp_shape, 37, np.uint8),
        "w1": rng.integers(-63, 64, (4, 3, 3, 3)).astype(np.int8), "w1s": rng.uniform(0.01, 0.02, 4).astype(np.float32),
        "w1z": np.zeros(4, np.int8), "ys": np.array(0.05, np.float32), "yz": np.array(0, np.uint8),
        "w2": rng.integers(-63, 64, (8, 4, 3, 3)).astype(np.int8), "w2s": rng.uniform(0.01, 0.02, 8).astype(np.float32),
        "w2z": np.zeros(8, np.int8)}.items()]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w1", "w1s", "w1z"], ["w1d"], axis=0),
             helper.make_node("Conv", ["xd", "w1d"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("QuantizeLinear", ["r1", "ys", "yz"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "ys", "yz"], ["rd"]),
             helper.make_node("DequantizeLinear", ["w2", "w2s", "w2z"], ["w2d"], axis=0),
             helper.make_node("Conv", ["rd", "w2d"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 9, 9])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    assert pad_conv_input_channels(model) == 1
    onnx.checker.check_model(model, full_check=True)
    padded = tmp_path / "padded.onnx"
    onnx.save(model, str(padded))
    G = Graph(model)
    pad = next(n for n in model.graph.node if n.op_type == "Pad")
    assert G.const(pad.input[2]).shape == () and G.const(pad.input[2]) == 37
    weights = [G.const(n.input[0]) for n in model.graph.node
               if n.op_type == "DequantizeLinear" and G.is_const(n.input[0])]
    assert [w.shape[1] for w in weights] == [4, 4] and np.all(weights[0][:, 3] == 0)

    x = rng.standard_normal((16, 3, 9, 9)).astype(np.float32)
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        a, b = _run_ort(padded, x, level), _run_ort(plain, x, level)
        assert np.array_equal(a, b) and np.abs(b).max() > 0


def test_a_long_reduction_is_not_padded():
    """A 3-channel 7x7 convolution (reduction length 147, torchvision ResNet's stem) runs faster unpadded on 224x224
    images at batch 16-64 (issue 14), so the pass leaves it unless told otherwise."""
    from onnx import TensorProto, helper, numpy_helper

    from dfq_deploy.export.ort_passes import PAD_MAX_REDUCTION, pad_conv_input_channels

    def stem():
        inits = [numpy_helper.from_array(v, k) for k, v in {
            "xs": np.array(0.02, np.float32), "xz": np.array(0, np.uint8), "w": np.ones((8, 3, 7, 7), np.int8),
            "ws": np.full(8, 0.01, np.float32), "wz": np.zeros(8, np.int8)}.items()]
        nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
                 helper.make_node("Conv", ["xd", "wd"], ["y"], strides=[2, 2], pads=[3, 3, 3, 3])]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 9, 9])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)

    assert 3 * 7 * 7 >= PAD_MAX_REDUCTION
    assert pad_conv_input_channels(stem()) == 0
    assert pad_conv_input_channels(stem(), max_reduction=3 * 7 * 7 + 1) == 1
