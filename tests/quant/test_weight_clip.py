"""Weight ranges searched for the least error: the search itself, and what clamping the float weights does to the
student's quantizers."""

import pytest
import torch

from dfq_deploy.quant import QuantScheme, quantize_model
from dfq_deploy.quant.weight_clip import P_NORM, best_clip, clip_weights


def _error(w, bound, high):
    scale = bound / high
    return (w - torch.clamp(torch.round(w / scale), -high, high) * scale).abs().pow(P_NORM).sum()


def test_a_heavy_tailed_channel_is_clipped_and_a_uniform_one_is_not():
    g = torch.Generator().manual_seed(0)
    w = torch.empty(2, 256)
    torch.manual_seed(0)
    w[0] = torch.distributions.Laplace(0.0, 1.0).sample((256,))  # the usual shape of trained conv weights
    w[1] = torch.rand(256, generator=g) * 2 - 1
    bound = best_clip(w, -3, 3, per_channel=True).flatten()
    assert bound[0] < 0.7 * w[0].abs().max()  # its tail gives way to a finer grid for the many small weights
    assert bound[1] > 0.85 * w[1].abs().max()  # nothing to gain from clipping a uniform channel
    for row, b in zip(w, bound):  # the bound chosen is at least as good as the largest weight
        assert _error(row, b, 3) <= _error(row, row.abs().max(), 3)
    # brute force over a fine grid of bounds cannot do much better than the search's grid
    fine = torch.linspace(0.2, 1.0, 801) * w[0].abs().max()
    assert _error(w[0], bound[0], 3) <= min(_error(w[0], b, 3) for b in fine) * 1.02


def test_per_tensor_search_gives_one_bound_and_an_all_zero_channel_stays_zero():
    w = torch.zeros(3, 2, 3, 3)
    w[1] = torch.linspace(-1, 1, 18).view(2, 3, 3)
    assert best_clip(w, -7, 7, per_channel=False).shape == (1, 1, 1, 1)
    bound = best_clip(w, -7, 7, per_channel=True)
    assert bound.shape == (3, 1, 1, 1) and bound[0].item() == 0 and bound[2].item() == 0


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_clipping_the_weights_sets_the_quantizer_scale_and_lowers_the_weight_error(tiny_teacher, bits):
    student = quantize_model(tiny_teacher, QuantScheme(bits, bits))
    layers = [m for m in student.modules() if hasattr(m, "quant_weight") and m.weight_quant.is_quant_enabled]
    before = [(m.weight.detach().clone(), m.quant_weight()) for m in layers]
    clipped = clip_weights(student)
    assert len(clipped) == len(layers) and any(share > 0 for share in clipped.values())
    for m, (w0, q0) in zip(layers, before):
        q1 = m.quant_weight()
        high = float(m.weight_quant.tensor_quant.int_quant.max_int(q1.bit_width))
        rows = m.weight.detach().flatten(1).abs().amax(1)
        # Brevitas' step size follows the clamped weights: the channel's bound over its highest code
        assert torch.allclose(q1.scale.flatten(), rows / high, rtol=1e-6)
        # quantized against the *original* weights, the new grid errs no more than the old, channel by channel
        err0 = (w0 - q0.value.detach()).abs().pow(P_NORM).flatten(1).sum(1)
        err1 = (w0 - q1.value.detach()).abs().pow(P_NORM).flatten(1).sum(1)
        assert bool((err1 <= err0 * (1 + 1e-5) + 1e-12).all())
