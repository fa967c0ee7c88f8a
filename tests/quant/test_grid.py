"""The full weight grid: every signed code at zero point 0, the smallest step that fits each channel unclipped."""

import pytest
import torch

from dfq_deploy.errors import ConfigError
from dfq_deploy.quant import QuantScheme, quantize_model


def _weights(student):
    return {n: m for n, m in student.named_modules() if hasattr(m, "quant_weight")}


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_the_full_grid_uses_every_code_at_the_smallest_step_that_fits(tiny_teacher, bits):
    narrow = _weights(quantize_model(tiny_teacher, QuantScheme(bits, bits)))
    full = _weights(quantize_model(tiny_teacher, QuantScheme(bits, bits, weight_grid="full")))
    half = 2 ** (bits - 1)
    names = list(full)
    lowest = finer = 0
    for name in names[1:-1]:  # the inner layers; the edge ones keep their 8-bit (portable: 7-bit) narrow grid
        m = full[name]
        q = m.quant_weight()
        w = m.weight.detach().flatten(1)
        step = q.scale.detach().flatten()
        want = torch.maximum(w.amax(1) / (half - 1), -w.amin(1) / half)
        assert torch.allclose(step, want, rtol=1e-5)
        codes = torch.round(q.value.detach() / q.scale.detach()).flatten(1)
        assert int(codes.min()) >= -half and int(codes.max()) <= half - 1
        assert float((w / step[:, None] - codes).abs().max()) <= 0.5 + 1e-4  # nothing clipped
        lowest += int((codes == -half).sum())
        old = narrow[name].quant_weight().scale.detach().flatten()
        assert bool((step <= old * (1 + 1e-6)).all())  # never coarser than the narrow grid
        finer += int((step < old * 0.99).sum())
    assert lowest > 0 and finer > 0
    for name in (names[0], names[-1]):
        assert torch.equal(full[name].quant_weight().value, narrow[name].quant_weight().value)


def test_a_grid_that_is_not_one_is_refused():
    with pytest.raises(ConfigError, match="weight_grid"):
        QuantScheme(weight_grid="wide")
