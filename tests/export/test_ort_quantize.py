import onnxruntime as ort
import pytest
import torch

from dfq_deploy.errors import ConfigError
from dfq_deploy.export import ort_kernel_census
from dfq_deploy.export.ort_quantize import ort_quantize_static


def test_w8a8_runs_integer_kernels_and_tracks_the_float_model(tiny_teacher, tmp_path):
    calib = [torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    path = ort_quantize_static(tiny_teacher, tmp_path / "q.onnx", (1, 28, 28), calib)
    census = ort_kernel_census(path)
    assert census.all_integer and census.integer_compute == 10  # 9 convs (resnet8 + 2 shortcuts) + Gemm
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = tiny_teacher(x).numpy()
    assert (out.argmax(1) == ref.argmax(1)).mean() > 0.9


def test_unsupported_bits_are_refused_without_output(tiny_teacher, tmp_path):
    with pytest.raises(ConfigError, match="8 or 4 bits"):
        ort_quantize_static(tiny_teacher, tmp_path / "q.onnx", (1, 28, 28), [torch.randn(4, 1, 28, 28)], 3, 3)
    assert list(tmp_path.iterdir()) == []
