"""The layer-local check runs the kernels the whole model runs, and names the CPU when only its kernels differ."""

import os
from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from dfq_deploy.export import export_onnx
from dfq_deploy.export.inspect import INTEGER_ADD_OPS, INTEGER_COMPUTE_OPS
from dfq_deploy.quant import QuantScheme, calibrate, quantize_model
from dfq_deploy.runtimes.emulated import EmulatedCPU, emulator
from dfq_deploy.validate.local import activation_chains, check_layers, layer_submodel

INTEGER = INTEGER_COMPUTE_OPS | INTEGER_ADD_OPS


def _optimized_ops(model: onnx.ModelProto, tmp_path, name: str) -> Counter:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / f"{name}.opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def _student(tag, **kw):
    from dfq_deploy.models import build_model

    torch.manual_seed(0)
    q = quantize_model(build_model("resnet8", width=8).eval(), QuantScheme.from_tag(tag, **kw))
    calibrate(q, [torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))])
    return q.eval()


@pytest.mark.parametrize("profile", ["onnxruntime", "tensorrt"])
def test_sub_graphs_run_the_integer_kernels_of_the_whole_model(tmp_path, profile):
    """Each integer kernel of the whole model appears in exactly one layer sub-graph (the one whose activation it
    computes), so the sub-graphs' kernels add up to the model's: in the tensorrt profile ONNX Runtime fuses int8
    ``Q -> DQ`` pairs that a sub-graph fed bare codes would not have."""
    q = _student("W8A8", trt_compatible=True)
    path = tmp_path / f"{profile}.onnx"
    export_onnx(q, path, (1, 28, 28), profile=profile)
    model = onnx.load(path)
    whole = _optimized_ops(model, tmp_path, "whole")
    chains = activation_chains(model)
    parts = Counter()
    for c in chains:
        parts += _optimized_ops(layer_submodel(model, chains, c.index)[0], tmp_path, f"sub{c.index}")
    assert sum(whole[o] for o in INTEGER) > 0
    assert {o: parts[o] for o in INTEGER if parts[o] or whole[o]} == {o: whole[o] for o in INTEGER
                                                                         if parts[o] or whole[o]}


needs_qemu = pytest.mark.skipif(emulator() is None and not os.environ.get("DFQ_REQUIRE_QEMU"),
                                reason="qemu-x86_64-static missing, or not an x86 host")


@needs_qemu
def test_a_layer_that_only_the_cpus_integer_kernels_get_wrong_is_blamed_on_them(tmp_path):
    """Full 8-bit weights after 8-bit inputs on emulated AVX2: the integer kernels saturate, float QDQ does not."""
    from dfq_deploy.models import SHIPPED_TEACHER, load_teacher
    from dfq_deploy.data import load_eval_set

    teacher, card = load_teacher(SHIPPED_TEACHER)
    x = load_eval_set("fashion-mnist", card.mean, card.std, limit=64).images
    q = quantize_model(teacher, QuantScheme.from_tag("W8A8", portable=False))
    calibrate(q, [x])
    path = tmp_path / "vnni-only.onnx"
    export_onnx(q.eval(), path, tuple(card.input_shape), portable=False)
    with EmulatedCPU("Haswell") as cpu:
        result = check_layers(path, x.numpy(), q, session=cpu.session)
    failed = [layer for layer in result.layers if not layer.passed]
    assert failed and all(layer.cause == "integer kernels" for layer in failed)
    assert all(layer.float_qdq["passed"] and layer.float_qdq["max_steps"] <= 1 for layer in failed)
    native = check_layers(path, x.numpy(), q)  # the same graph on this (VNNI or not) CPU natively
    assert native or all(layer.cause == "integer kernels" for layer in native.layers if not layer.passed)


def test_a_faulty_export_is_blamed_on_the_export(tmp_path):
    """A planted wrong weight scale differs in float QDQ too: the verdict blames the export, not the CPU."""
    from dfq_deploy.export.graph import Graph

    q = _student("W8A8")
    path = tmp_path / "m.onnx"
    export_onnx(q, path, (1, 28, 28))
    model = onnx.load(path)
    G = Graph(model)
    conv = next(n for n in G.g.node if n.op_type == "Conv" and G.producer[n.input[1]].op_type == "DequantizeLinear")
    dq = G.producer[conv.input[1]]
    dq.input[1] = G.add_const(dq.input[1], G.const(dq.input[1]) * np.float32(1.3))
    onnx.save(model, path)
    x = np.random.default_rng(0).standard_normal((32, 1, 28, 28)).astype(np.float32)
    result = check_layers(path, x, q)
    first = result.first_failure
    assert first is not None and first.cause == "export" and not first.float_qdq["passed"]
