import subprocess
import sys

import numpy as np
import pytest
import torch

from dfq_deploy.errors import ConfigError, RuntimeUnavailableError
from dfq_deploy.runtimes import available_runtimes, get_runtime
from dfq_deploy.runtimes.torch_ref import TorchRuntime


def test_registry_names():
    assert get_runtime("torch") is TorchRuntime
    assert "onnxruntime" in available_runtimes()
    with pytest.raises(ConfigError):
        get_runtime("coreml")


@pytest.mark.no_tensorrt
def test_tensorrt_is_reported_unavailable_with_a_reason():
    with pytest.raises(RuntimeUnavailableError) as e:
        get_runtime("tensorrt")
    assert "TensorRT" in str(e.value) and e.value.hint


def test_listing_runtimes_does_not_import_tensorrt():
    code = ("import sys; from dfq_deploy.runtimes import available_runtimes; available_runtimes();"
            "print('tensorrt' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_runtime_requires_activation_and_4d_input():
    rt = TorchRuntime(torch.nn.Conv2d(1, 2, 1))
    with pytest.raises(AssertionError):
        rt.infer(np.zeros((1, 1, 2, 2), np.float32))
    with rt:
        assert rt.infer(np.zeros((1, 1, 2, 2), np.float32)).shape == (1, 2, 2, 2)
        with pytest.raises(ConfigError):
            rt.infer(np.zeros((1, 2, 2), np.float32))


def test_one_options_object_builds_every_runtime(tmp_path):
    from dfq_deploy.runtimes import RuntimeOptions, make_runtime
    from dfq_deploy.runtimes.emulated import EmulatedOnnxRuntime
    from dfq_deploy.runtimes.ort import OnnxRuntime
    from dfq_deploy.runtimes.trt import TensorRTRuntime

    opts = RuntimeOptions(threads=3, optimize=False)
    rt = make_runtime("onnxruntime", tmp_path / "m.onnx", opts)
    assert isinstance(rt, OnnxRuntime) and rt.threads == 3 and rt.optimize is False and not rt.active
    emulated = OnnxRuntime.from_options(tmp_path / "m.onnx", RuntimeOptions(emulate_cpu="Haswell"))
    assert isinstance(emulated, EmulatedOnnxRuntime) and emulated.cpu.threads == 1
    assert TensorRTRuntime.from_options(tmp_path / "m.onnx", RuntimeOptions(engine=tmp_path / "m.plan")).model == \
        tmp_path / "m.plan"
    assert TensorRTRuntime.from_options(tmp_path / "m.onnx", opts).model == tmp_path / "m.onnx"
    model = torch.nn.Identity()
    assert make_runtime("torch", model, opts).model is model
