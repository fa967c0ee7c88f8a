"""Weight ranges chosen by error, not by the largest weight.

Brevitas' weight quantizer takes each output channel's step size from its largest absolute weight (``AbsMax``), so
one outlier sets the grid for every other weight of the channel: at 3 bits (codes -3..3) a channel whose largest
weight is four times its typical one rounds most of its weights to 0 or +-1. The usual fix in post-training
quantization (BRECQ, QDrop) is to search each channel's clipping range for the least ``L_p`` error between the
weights and their quantized values.

Here that range is applied to the float weights themselves: each channel's weights are clamped to ``[-c, c]``. The
quantizer then takes its step size ``c / qmax`` from the clamped weights as before, so the quantized model is the
one a quantizer with a learned clipping range would give, while the student keeps Brevitas' own quantizers, its
state-dict keys and its export: nothing downstream (calibration, reconstruction's rounding and bake, the integer
graph, the gate) knows the difference. A weight beyond ``c`` would be quantized to ``+-qmax`` codes either way.
"""

from __future__ import annotations

import torch
from torch import nn

# the norm of the error the search minimises: BRECQ's choice, between the mean squared error (which clips little)
# and the largest error (which does not clip)
P_NORM = 2.4
# clipping ratios tried, as fractions of the channel's largest absolute weight
RATIOS = torch.linspace(0.2, 1.0, 81)


def _weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantWeightBiasInputOutputLayer)
            and getattr(m, "weight_quant", None) is not None and m.weight_quant.is_quant_enabled]


def _code_range(layer: nn.Module) -> tuple[float, float]:
    """(lowest, highest) integer code of ``layer``'s weight quantizer."""
    int_quant = layer.weight_quant.tensor_quant.int_quant
    bit_width = layer.quant_weight().bit_width
    return float(int_quant.min_int(bit_width)), float(int_quant.max_int(bit_width))


def best_clip(weight: torch.Tensor, low: float, high: float, per_channel: bool) -> torch.Tensor:
    """Each output channel's (or, not ``per_channel``, the tensor's) clipping bound ``c`` in ``RATIOS x max|w|``
    that minimises ``sum |w - q(w)|^P_NORM``, where ``q`` rounds ``w / (c / high)`` to the nearest code in
    ``[low, high]``. Shaped to broadcast against ``weight``."""
    rows = weight.detach().flatten(1) if per_channel else weight.detach().reshape(1, -1)
    top = rows.abs().amax(1, keepdim=True)
    best, best_err = top.clone(), torch.full_like(top, float("inf"))
    for ratio in RATIOS.to(rows.device, rows.dtype):
        clip = top * ratio
        scale = torch.where(clip > 0, clip / high, torch.ones_like(clip))
        err = (rows - torch.clamp(torch.round(rows / scale), low, high) * scale).abs().pow(P_NORM).sum(1, True)
        better = err < best_err
        best, best_err = torch.where(better, clip, best), torch.where(better, err, best_err)
    shape = (-1,) + (1,) * (weight.dim() - 1) if per_channel else (1,) * weight.dim()
    return best.view(shape)


def clip_weights(model: nn.Module) -> dict[str, float]:
    """Clamp every quantized Conv/Linear weight of ``model`` (a student of :func:`dfq_deploy.quant.quantize_model`)
    to its error-minimising range, in place. Returns, per layer, the share of its weights that were clamped."""
    clipped = {}
    with torch.no_grad():
        for name, layer in _weight_layers(model):
            low, high = _code_range(layer)
            per_channel = layer.quant_weight().scale.numel() > 1
            bound = best_clip(layer.weight, low, high, per_channel)
            outside = layer.weight.abs() > bound
            layer.weight.copy_(torch.maximum(torch.minimum(layer.weight, bound), -bound))
            clipped[name] = float(outside.float().mean())
    return clipped
