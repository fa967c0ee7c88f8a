"""A cached forward of a weight quantizer whose rounding is learned (AdaRound) while its weight is frozen.

Block reconstruction swaps a layer's round-to-nearest for Brevitas' ``LearnedRoundSte`` and learns only the
rounding: the float weight, hence its step size, does not move until the rounding is baked in. Brevitas still
recomputes the step size from the weight, divides, floors and recomputes the bit width's bounds on every forward.
:func:`cache_learned_rounding` computes those once and leaves each step the learned offset (Brevitas' own hard
sigmoid of the logits) and Brevitas' own clamp: the same values and gradients. Nothing on the module's state
changes; :func:`uncache` puts Brevitas' forward back.
"""

from __future__ import annotations

import torch
from torch import nn

from .guard import enabled


def weight_scale_is_constant(tq: nn.Module) -> bool:
    """Whether the weight quantizer ``tq`` (a ``RescalingIntQuant``) takes its step size from the weight's statistics
    alone, with zero point 0, a constant bit width and no delay: then a fixed weight has a fixed step size."""
    from brevitas.core.bit_width import BitWidthConst
    from brevitas.core.quant.delay import _NoDelay
    from brevitas.core.scaling import StatsFromParameterScaling
    from brevitas.core.zero_point import ZeroZeroPoint

    iq = getattr(tq, "int_quant", None)
    return iq is not None and "forward" not in vars(tq) and \
        isinstance(getattr(tq, "scaling_impl", None), StatsFromParameterScaling) and \
        isinstance(getattr(tq, "zero_point_impl", None), ZeroZeroPoint) and \
        isinstance(getattr(tq, "msb_clamp_bit_width_impl", None), BitWidthConst) and \
        isinstance(iq.delay_wrapper.delay_impl, _NoDelay)


def cache_learned_rounding(tq: nn.Module, impl: nn.Module, weight: torch.Tensor) -> bool:
    """Give the weight quantizer ``tq`` (whose integer quantizer rounds with ``impl``, a ``LearnedRoundSte``) the
    cached forward for the frozen ``weight``, where the fast path applies; returns whether it did (the caller then
    freezes the weight)."""
    if not enabled() or not weight_scale_is_constant(tq):
        return False
    with torch.no_grad():
        _, scale, zero_point, bit_width = tq(weight)
    tq.forward = _cached_forward(tq.int_quant, impl, weight, scale, zero_point, bit_width)
    return True


def has_cached_rounding(tq: nn.Module) -> bool:
    """Whether the weight quantizer ``tq`` computes through :func:`cache_learned_rounding`'s forward."""
    return "forward" in vars(tq)


def uncache(tq: nn.Module) -> None:
    """Brevitas' own forward back on the weight quantizer ``tq`` (nothing to do if it was not cached)."""
    if has_cached_rounding(tq):
        del tq.forward


def _cached_forward(int_quant: nn.Module, impl: nn.Module, weight: torch.Tensor, scale, zero_point, bit_width):
    """Brevitas' ``IntQuant`` steps for a frozen weight: ``floor(w / scale + zero_point)`` is computed once, so a step
    only adds the learned rounding offset and clamps. The same values and gradients as
    ``int_quant(scale, zero_point, bit_width, weight)`` with ``LearnedRoundSte``."""
    with torch.no_grad():
        floor = torch.floor(int_quant.input_view_impl(weight) / scale + zero_point)
        lo, hi = int_quant.min_int(bit_width), int_quant.max_int(bit_width)

    def forward(x):
        offset = impl.tensor_slicer(impl.input_view_impl(impl.learned_round_impl(impl.value)))
        y = int_quant.tensor_clamp_impl(floor + offset, min_val=lo, max_val=hi)
        return (y - zero_point) * scale, scale, zero_point, bit_width
    return forward
