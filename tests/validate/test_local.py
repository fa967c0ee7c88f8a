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
from dfq_deploy.validate.local import activation_chains, check_layers, forced_model

from .faults import plant_scale_error

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


@pytest.mark.parametrize("profile", ["onnxruntime", "tensorrt"], ids=["ort_profile", "trt_profile"])  # runs without TensorRT
def test_the_forced_graph_runs_the_integer_kernels_of_the_whole_model(tmp_path, profile):
    """The teacher-forced graph that the layer-local check runs is fused into the same integer kernels as the model:
    in the tensorrt profile ONNX Runtime turns some int8 ``Q -> DQ`` pairs into uint8 and fuses the convolutions
    around them, and which ones depends on the whole graph (a sub-graph cut around one layer fused others)."""
    q = _student("W8A8", trt_compatible=True)
    path = tmp_path / f"{profile}.onnx"
    export_onnx(q, path, (1, 28, 28), profile=profile)
    model = onnx.load(path)
    whole = _optimized_ops(model, tmp_path, "whole")
    forced, feeds = forced_model(model, activation_chains(model))
    assert len(feeds) == len(activation_chains(model)) - 2  # all but the input's and the logits' quantizers
    ops = _optimized_ops(forced, tmp_path, "forced")
    assert sum(whole[o] for o in INTEGER_COMPUTE_OPS) > 0
    assert {o: ops[o] for o in INTEGER} == {o: whole[o] for o in INTEGER}
    assert ops["Conv"] + ops["FusedConv"] == whole["Conv"] + whole["FusedConv"]  # the float ones stay float too


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


def test_a_model_exported_as_portable_that_can_saturate_fails_the_gate(tmp_path):
    """The static bound is gated: full 8-bit weights after 8-bit inputs under a ``dfq_deploy.portable`` claim fail,
    whatever this CPU computes; the same graph with an honest claim (``--vnni-only``) is reported, not failed."""
    from dfq_deploy.data import EvalSet
    from dfq_deploy.export.graph import set_metadata
    from dfq_deploy.validate import Gate, check_parity

    q = _student("W8A8", portable=False)
    path = tmp_path / "m.onnx"
    export_onnx(q, path, (1, 28, 28), portable=False)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((32, 1, 28, 28)).astype(np.float32))
    data = EvalSet(x, torch.full((32,), -1), (), "noise")
    with torch.no_grad():
        out = q(x)
        ref = getattr(out, "value", out).numpy()
    verdicts = {}
    for claim in ("false", "true"):
        model = onnx.load(path)
        meta = {p.key: p.value for p in model.metadata_props}
        set_metadata(model, {**meta, "dfq_deploy.portable": claim})
        onnx.save(model, path)
        result = check_parity("torch", ref, {"onnxruntime": ref}, data, path, Gate(), student=q)
        verdicts[claim] = [f for f in result.failures() if "16-bit pair sum" in f]
        assert result.pair_sums["exact_without_vnni"] is False and result.cpu["int8_dot"] in ("int32", "int16-pairs")
    assert verdicts["false"] == [] and len(verdicts["true"]) == 1 and "can saturate" in verdicts["true"][0]


def test_large_activations_shrink_the_batch_and_change_no_count(tmp_path, monkeypatch):
    """One pass holds every activation of its batch several times over; where one image's activations are large
    the check takes fewer images per pass, and the tallies it reports are the same."""
    import dfq_deploy.validate.local as local

    q = _student("W4A4")
    path = tmp_path / "m.onnx"
    export_onnx(q, path, (1, 28, 28))
    plant_scale_error(path, factor=1.05)  # something to count: one layer off on part of its elements
    x = torch.randn(24, 1, 28, 28, generator=torch.Generator().manual_seed(2)).numpy()
    whole = check_layers(path, x, q, batch_size=32)
    passes = []
    real = local._ForcedRun.reference

    def counted(self, xb):
        passes.append(int(xb.shape[0]))
        return real(self, xb)

    monkeypatch.setattr(local._ForcedRun, "reference", counted)
    monkeypatch.setattr(local, "LOCAL_CHECK_VALUES", 1)  # less than one image: one image per pass
    split = check_layers(path, x, q, batch_size=32)
    # the probe, then one image per pass (the failing layer's second look runs them all again)
    assert set(passes) == {1} and len(passes) in (1 + 24, 1 + 2 * 24)
    def counts(result):
        return [(a.max_steps, a.mismatched, a.unexplained, a.shape, a.passed) for a in result.layers]

    assert any(0 < a.mismatched < 1 for a in whole.layers)
    assert counts(split) == counts(whole)
