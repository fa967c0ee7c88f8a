
import numpy as np
import onnx
import pytest
import torch

from dfq_deploy.errors import ConfigError
from dfq_deploy.export import export_onnx, ort_kernel_census
from dfq_deploy.export.inspect import output_quant_step
from dfq_deploy.quant import QuantScheme, calibrate, quantize_model
from dfq_deploy.runtimes.ort import OnnxRuntime
from dfq_deploy.runtimes.torch_ref import TorchRuntime


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from dfq_deploy.models import build_model

    torch.manual_seed(0)
    teacher = build_model("resnet8", width=8).eval()
    q = quantize_model(teacher, QuantScheme(4, 4))
    calibrate(q, [torch.randn(64, 1, 28, 28) for _ in range(2)])
    path = tmp_path_factory.mktemp("exp") / "m.onnx"
    res = export_onnx(q, path, (1, 28, 28), metadata={"dfq_deploy.recipe": "test"})
    return q.eval(), path, res


def test_export_is_checker_clean_with_metadata(exported):
    _, path, res = exported
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["dfq_deploy.recipe"] == "test" and meta["dfq_deploy.profile"] == "onnxruntime"
    assert res.passes["signed_activations_moved_to_uint8"] > 0
    assert not [i.name for i in m.graph.input if i.name != "input"]  # weights are not graph inputs


def test_every_conv_and_gemm_runs_as_an_integer_kernel(exported):
    _, path, _ = exported
    c = ort_kernel_census(path)
    n_conv = sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)
    assert c.op_counts.get("QLinearConv") == n_conv and c.op_counts.get("QGemm") == 1
    assert c.float_compute == [] and c.all_integer


def test_onnxruntime_matches_pytorch_within_one_step(exported):
    q, path, _ = exported
    x = np.random.default_rng(0).standard_normal((256, 1, 28, 28)).astype(np.float32)
    with TorchRuntime(q) as t, OnnxRuntime(path) as o:
        ref, out = t.infer(x), o.infer(x)
    step = output_quant_step(path)
    assert step is not None and step > 0
    assert np.abs(ref - out).max() <= step * 1.001
    assert (ref.argmax(1) == out.argmax(1)).mean() >= 0.996


def test_bad_profile_leaves_no_file(tmp_path, exported):
    q, _, _ = exported
    with pytest.raises(ConfigError):
        export_onnx(q, tmp_path / "x.onnx", (1, 28, 28), profile="coreml")
    assert list(tmp_path.iterdir()) == []
