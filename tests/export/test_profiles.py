"""Both export profiles of one trained model compute the model's function; each meets its runtime's rules."""

import json

import numpy as np
import onnx
import pytest
import torch

from dfq_deploy.errors import ExportError
from dfq_deploy.export import check_tensorrt_rules, export_onnx, layer_bits, ort_kernel_census
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
    assert stored[names[0]] == {"weight": 8, "input": 8} and stored[names[-1]] == {"weight": 8, "input": 8}
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
