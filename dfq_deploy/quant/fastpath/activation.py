"""A faster fake-quantization for Brevitas' activation quantizers.

Brevitas computes an activation's fake-quantization as a chain of about ten full-size tensor operations forward and
as many backward (divide, add the zero point, round, a two-sided clamp built from ``torch.where`` against 0-dim
tensors, subtract, multiply), and its clamp takes a slow path of torch's ``where``: at the small batches of block
reconstruction on a few cores that is a large share of a step (docs/benchmarks.md). :class:`FusedActivationQuant`
swaps, for as long as it is active, each plain activation quantizer's ``forward`` for one autograd function with the
same values (bit for bit) and gradients; the step size still comes from Brevitas' own scaling module. Written here
because Brevitas has no such fused path on the CPU; the modules and their state dicts are never changed, so export
and checkpoints see Brevitas' own quantizers.
"""

from __future__ import annotations

import torch
from torch import nn

from .guard import enabled


def is_act_quant(mod: nn.Module) -> bool:
    """Whether ``mod`` is a Brevitas activation quantizer (QuantReLU, QuantIdentity, ...)."""
    return hasattr(mod, "act_quant") and hasattr(getattr(mod.act_quant, "fused_activation_quant_proxy", None),
                                                 "tensor_quant")


class _RoundClamp(torch.autograd.Function):
    """``clamp(round(x / scale), lo, hi) * scale``, the fake-quantization of an activation quantizer, with the
    gradients of Brevitas' composition of it (straight-through round; the clamp passes the gradient inside the
    range only; the step size gets LSQ's gradient), in 5 elementwise passes forward and 3 backward instead of about
    twenty. Values are bit-identical to Brevitas' ``IntQuant`` (same operations, same order; zero point 0)."""

    @staticmethod
    def forward(ctx, x, scale, lo: float, hi: float):
        y = x / scale
        r = torch.round(y)
        c = torch.clamp(r, lo, hi)
        # float 0/1, not bool: a bool tensor is slow to write and slow to multiply with on the CPU
        inside = torch.eq(c, r, out=torch.empty_like(c))
        ctx.save_for_backward(y, c, inside)
        ctx.scale_shape = scale.shape
        return c * scale

    @staticmethod
    def backward(ctx, grad):
        y, c, inside = ctx.saved_tensors
        gx = grad * inside
        gs = None
        if ctx.needs_input_grad[1]:
            # d(out)/d(scale) = c - inside * y (LSQ); summed against the incoming gradient
            gs = torch.dot(grad.reshape(-1), c.reshape(-1)) - torch.dot(gx.reshape(-1), y.reshape(-1))
            gs = gs.reshape(ctx.scale_shape)
        return gx, gs, None, None


def _fusable(tq: nn.Module) -> bool:
    """Whether Brevitas' quantizer ``tq`` (an activation's ``RescalingIntQuant``) is the plain case
    :class:`_RoundClamp` computes: round to nearest, zero point 0, constant bit width, no delay, no input view."""
    from brevitas.core.bit_width import BitWidthConst
    from brevitas.core.function_wrapper import Identity, RoundSte, TensorClamp
    from brevitas.core.quant.delay import _NoDelay
    from brevitas.core.zero_point import ZeroZeroPoint

    iq = getattr(tq, "int_quant", None)
    return iq is not None and not getattr(tq, "observer_only", False) and \
        isinstance(getattr(tq, "zero_point_impl", None), ZeroZeroPoint) and \
        isinstance(getattr(tq, "msb_clamp_bit_width_impl", None), BitWidthConst) and \
        type(iq.float_to_int_impl) is RoundSte and type(iq.tensor_clamp_impl) is TensorClamp and \
        type(iq.input_view_impl) is Identity and isinstance(iq.delay_wrapper.delay_impl, _NoDelay)


class FusedActivationQuant:
    """While active (a context manager, or until :meth:`remove`), the activation quantizers ``names`` of ``model``
    (default: all of them) compute their fake-quantization with :class:`_RoundClamp`, through an instance ``forward``
    on Brevitas' ``RescalingIntQuant``. The step size still comes from Brevitas' own scaling module (in training
    mode it collects statistics or learns as before). The modules and their state dicts are never changed.
    Quantizers of another kind keep Brevitas' path, and all of them do with a Brevitas version the fast path was not
    checked against (:mod:`.guard`).

    Why: Brevitas builds each fake-quantization from about ten full-size operations forward and as many backward,
    and its clamp (``torch.where`` against 0-dim tensors) takes a slow path (see the module docstring)."""

    def __init__(self, model: nn.Module, names: list[str] | None = None):
        self.patched = []
        if not enabled():
            return
        if names is None:
            names = [n for n, m in model.named_modules() if is_act_quant(m)]
        for name in names:
            tq = model.get_submodule(name).act_quant.fused_activation_quant_proxy.tensor_quant
            if not _fusable(tq) or "forward" in vars(tq):
                continue
            bit_width = tq.msb_clamp_bit_width_impl()
            lo, hi = float(tq.int_quant.min_int(bit_width)), float(tq.int_quant.max_int(bit_width))
            tq.forward = self._forward(tq, lo, hi)
            self.patched.append(tq)

    @staticmethod
    def _forward(tq: nn.Module, lo: float, hi: float):
        from brevitas.core.scaling.standalone import ParameterFromRuntimeStatsScaling

        scaling = tq.scaling_impl
        from_stats = isinstance(scaling, ParameterFromRuntimeStatsScaling)
        constants: dict = {}  # per device: bit width, integer threshold, restricted threshold, zero point

        def constants_on(x):
            # Brevitas recomputes the bit width, the threshold (2^b - 1 or 2^(b-1)) and the zero point of a quantizer
            # on every forward, and its runtime-statistics scaling transforms the threshold the same way each time:
            # they depend on constants only, so they are computed once (per device: the model may move). The step
            # size itself is still computed from its learned parameter on every call, by Brevitas' own modules in
            # Brevitas' order. Recomputed, they were a noticeable share of a reconstruction step on a few cores.
            c = constants.get(x.device)
            if c is None:
                with torch.no_grad():
                    bit_width = tq.msb_clamp_bit_width_impl()
                    int_threshold = tq.int_scaling_impl(bit_width)
                    threshold = scaling.restrict_threshold(scaling.restrict_threshold_pre(int_threshold)) \
                        if from_stats else None
                    zero_point = tq.zero_point_impl(x, int_threshold, bit_width)  # ZeroZeroPoint: a constant 0
                c = constants[x.device] = (bit_width, int_threshold, threshold, zero_point)
            return c

        def step_size(x, int_threshold, threshold):
            if from_stats and scaling.counter > scaling.collect_stats_steps:
                # ParameterFromRuntimeStatsScaling.forward once its statistics are in its parameter
                if scaling.training:
                    value = scaling.clamp_scaling(scaling.restrict_scaling(scaling.value))
                    return scaling.restrict_scale_threshold(value / threshold)
                value = scaling.restrict_scale_threshold(scaling.restrict_scaling(scaling.value) / threshold)
                return scaling.clamp_scaling(value)
            return scaling(x, int_threshold)

        def forward(x):
            bit_width, int_threshold, threshold, zero_point = constants_on(x)
            scale = step_size(x, int_threshold, threshold)
            if scale.numel() != 1:  # per-channel activation scales: Brevitas' own integer quantizer
                return tq.int_quant(scale, zero_point, bit_width, x), scale, zero_point, bit_width
            if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
                return _RoundClamp.apply(x, scale, lo, hi), scale, zero_point, bit_width
            # no gradient wanted (evaluation, calibration passes): _RoundClamp's forward without its saved tensors, in
            # place on one new tensor (the same values; one allocation instead of four)
            return (x / scale).round_().clamp_(lo, hi).mul_(scale), scale, zero_point, bit_width
        return forward

    def remove(self):
        for tq in self.patched:
            del tq.forward
        self.patched = []

    def __enter__(self) -> "FusedActivationQuant":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
