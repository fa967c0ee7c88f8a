import numpy as np
import pytest
import torch

from dfq_deploy.quant import QuantScheme, calibrate, quantize_model
from dfq_deploy.quant.fastpath import FusedActivationQuant
from dfq_deploy.runtimes.torch_ref import TorchRuntime


@pytest.mark.parametrize("bits", ["W4A4", "W8A8"])
def test_torch_reference_is_brevitas_own_path(tiny_teacher, bits):
    """The reference evaluates the student through Brevitas' own modules (the computation the layer-local check and
    the float64 evaluation use), not the training fast path: nothing on the student is patched while it runs, and its
    logits are Brevitas' own. The fast path, where used, must agree with it bit for bit."""
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
        assert not patched()
        got = rt.infer(x.numpy())
    np.testing.assert_array_equal(got, own)
    assert np.abs(own).max() > 0
    with FusedActivationQuant(student), torch.no_grad():
        np.testing.assert_array_equal(student(x).numpy(), own)
