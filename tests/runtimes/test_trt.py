"""TensorRT engine build and run: only where TensorRT and a GPU exist (skipped on CI and on the dev machines)."""

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]


def test_tensorrt_engine_matches_pytorch_within_one_step(tmp_path, monkeypatch):
    from dfq_deploy.export import export_onnx
    from dfq_deploy.export.inspect import output_quant_step
    from dfq_deploy.models import build_model
    from dfq_deploy.quant import QuantScheme, calibrate, quantize_model
    from dfq_deploy.runtimes.torch_ref import TorchRuntime
    from dfq_deploy.runtimes.trt import TensorRTRuntime

    monkeypatch.setenv("DFQ_DEPLOY_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    q = quantize_model(build_model("resnet8", width=8).eval(), QuantScheme(4, 4, trt_compatible=True))
    calibrate(q, [torch.randn(64, 1, 28, 28)])
    path = export_onnx(q.eval(), tmp_path / "m.onnx", (1, 28, 28), profile="tensorrt").path
    x = np.random.default_rng(0).standard_normal((128, 1, 28, 28)).astype(np.float32)
    with TorchRuntime(q) as t, TensorRTRuntime(path, max_batch=64) as r:
        ref, out = t.infer(x), r.infer(x)
    assert np.abs(ref - out).max() <= output_quant_step(path) * 1.001
    assert list((tmp_path / "cache" / "trt").glob("*.plan"))  # the engine was cached
