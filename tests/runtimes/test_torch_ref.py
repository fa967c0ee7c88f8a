import numpy as np
import pytest
import torch

from dfq_deploy.quant import QuantScheme, calibrate, quantize_model
from dfq_deploy.runtimes.torch_ref import TorchRuntime


@pytest.mark.parametrize("bits", ["W4A4", "W8A8"])
def test_torch_reference_gives_brevitas_own_logits(tiny_teacher, bits):
    """The reference runtime computes activations through the fused quantizer (issue 14): the logits must be
    Brevitas' own, and the student must get its own quantizers back when the runtime is deactivated."""
    g = torch.Generator().manual_seed(0)
    student = quantize_model(tiny_teacher, QuantScheme.from_tag(bits))
    calibrate(student, [torch.randn(32, 1, 28, 28, generator=g)])
    student.eval()
    x = torch.randn(16, 1, 28, 28, generator=g) * 2

    def patched():
        return [m for m in student.modules() if "forward" in vars(m)]

    with torch.no_grad():
        own = student(x).numpy()
    with TorchRuntime(student) as rt:
        assert patched()  # the fused path is in use
        got = rt.infer(x.numpy())
    assert not patched()
    np.testing.assert_array_equal(got, own)
    assert np.abs(own).max() > 0
