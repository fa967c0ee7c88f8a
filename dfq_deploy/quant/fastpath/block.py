"""A lean forward of one reconstruction block while it trains.

Brevitas runs a quantized layer through its proxies and ``QuantTensor``: every convolution and activation quantizer
builds a ``QuantTensor``, whose construction, the convolution's output-scale and bit-width bookkeeping and the
residual add's alignment bookkeeping are a few hundred small scalar operations per block forward and backward, a
visible share of a step on a few cores (docs/benchmarks.md). Block reconstruction only needs the block's output
*values* and the gradients of the rounding logits and activation step sizes, so while a block trains
:class:`LeanBlock` runs the same computation on plain tensors:

- a Conv/Linear calls Brevitas' own quantizers (the weight quantizer, which :func:`.rounding.cache_learned_rounding`
  has reduced to a cached floor plus the learned offset, and the bias quantizer with the step size Brevitas gives
  it: input step x weight step) and Brevitas' own ``inner_forward_impl`` on the values;
- an activation quantizer calls its ``FusedActivationQuantProxy`` (activation, then the step size from Brevitas'
  scaling module and the fake-quantization), and QDrop mixes in the unquantized value there, drawing its masks in
  the same order as the forward hooks of the Brevitas path;
- identities, pooling, flatten and the residual add act on the values (a ``QuantTensor`` add adds the values).

The same operations in the same order give the same values and gradients as the Brevitas path (a test checks it bit
for bit). A block holding anything else, or any block under a Brevitas version the fast path was not checked against
(:mod:`.guard`), returns ``None`` from :meth:`LeanBlock.build`, and the caller keeps Brevitas' path. Nothing is
changed on the modules, so export and checkpoints never see this.
"""

from __future__ import annotations

import operator
from typing import Callable

import torch
from torch import fx, nn

from .activation import is_act_quant
from .guard import enabled
from .masks import keep_lerp, keep_mask
from .rounding import has_cached_rounding

# modules that map a QuantTensor's value as they map a plain tensor. Identity keeps the step size; the others change
# or drop it (nothing after them in a supported block uses it: a quantizer comes first)
_PASS_SCALE = (nn.Identity,)
_DROP_SCALE = (nn.Flatten, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d)
_ADD = (operator.add, torch.add)


def _bias_quant(bias_quant: nn.Module) -> Callable:
    """(bias, step size) -> Brevitas' fake-quantized bias, for a ``PrescaledRestrictIntQuant``. For the plain integer
    quantizer (round to nearest, clamp, no input view, no delay) its operations are replayed in its order with the
    bit width's bounds and the zero point computed once: Brevitas recomputes them (about 15 small operations) on
    every call. Anything else calls Brevitas' module."""
    from brevitas.core.function_wrapper import Identity, RoundSte, TensorClamp
    from brevitas.core.quant.delay import _NoDelay
    from brevitas.function.ops import tensor_clamp
    from brevitas.function.ops_ste import round_ste

    tq = bias_quant.tensor_quant
    iq = tq.int_quant
    if not (type(iq.float_to_int_impl) is RoundSte and type(iq.tensor_clamp_impl) is TensorClamp and
            type(iq.input_view_impl) is Identity and isinstance(iq.delay_wrapper.delay_impl, _NoDelay)):
        return lambda bias, scale: tq(bias, scale)[0]
    with torch.no_grad():
        bit_width, zero_point = tq.msb_clamp_bit_width_impl(), tq.zero_point()
        lo, hi = iq.min_int(bit_width), iq.max_int(bit_width)

    def quant(bias, scale):  # IntQuant.forward / to_int
        y = round_ste(bias / scale + zero_point)
        return (tensor_clamp(y, min_val=lo, max_val=hi) - zero_point) * scale
    return quant


def _compute_step(mod: nn.Module, input_scaled: bool) -> Callable | None:
    """(value, input step size) -> output value of a Brevitas Conv/Linear, or None if it is not the plain case:
    no input or output quantizer, a weight quantizer with cached learned rounding, a bias quantized (if at all) with
    the input step times the weight step (``input_scaled``: the input has a step size)."""
    from brevitas.core.quant.int import PrescaledRestrictIntQuant
    from brevitas.utils.torch_utils import compute_channel_view_shape

    if mod.input_quant.is_quant_enabled or mod.output_quant.is_quant_enabled or \
            not has_cached_rounding(mod.weight_quant.tensor_quant):
        return None
    weight_quant = mod.weight_quant.tensor_quant
    bias_quant = mod.bias_quant if mod.bias is not None and mod.bias_quant.is_quant_enabled else None
    if bias_quant is not None and not (input_scaled and bias_quant.requires_input_scale and
                                       type(bias_quant.tensor_quant) is PrescaledRestrictIntQuant):
        return None
    quant_bias = _bias_quant(bias_quant) if bias_quant is not None else None
    channel_dim = -1 if isinstance(mod, nn.Linear) else 1

    def step(x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        weight, weight_scale = weight_quant(mod.weight)[:2]
        bias = mod.bias
        if quant_bias is not None:
            # BiasQuantProxyFromInjector.quant_output_scale_impl's arithmetic, in its order
            shape = compute_channel_view_shape(x, channel_dim=channel_dim)
            bias = quant_bias(bias, (weight_scale.view(shape) * scale.view(shape)).view(-1))
        return mod.inner_forward_impl(x, weight, bias)
    return step


def _act_step(mod: nn.Module, keep: float, rng: torch.Generator) -> Callable | None:
    """(values, step size) -> (values, step size) of the activation quantizer ``mod`` through its fused proxy, with
    QDrop's mix at probability ``keep`` (0: none); None unless it is the plain case (no input quantizer, quantizing,
    not exporting)."""
    proxy = mod.act_quant
    if getattr(mod, "input_quant", None) is not None and mod.input_quant.is_quant_enabled or \
            not proxy.is_quant_enabled or proxy.export_mode:
        return None
    fused = proxy.fused_activation_quant_proxy

    def act(a):
        x = fused.activation_impl(a[0])
        q, scale = fused.tensor_quant(x)[:2]
        if keep:
            q = keep_lerp(q, x, keep_mask(x.shape, keep, rng))
        return q, scale
    return act


def _module_step(mod: nn.Module, input_scaled: bool, keep: float, rng: torch.Generator
                 ) -> tuple[Callable, bool] | None:
    """(the step computing module ``mod`` on (values, step size), whether its output carries a step size), or None
    if ``mod`` is not supported. ``input_scaled``: its input carries one; ``keep``: QDrop's probability there."""
    if is_act_quant(mod):
        act = _act_step(mod, keep, rng)
        return None if act is None else (act, True)
    if hasattr(mod, "weight_quant") and hasattr(mod, "inner_forward_impl"):
        step = _compute_step(mod, input_scaled)
        return None if step is None else (lambda a: (step(*a), None), False)
    if type(mod) in _PASS_SCALE:
        return (lambda a: a), input_scaled
    if type(mod) in _DROP_SCALE:
        return (lambda a: (mod(a[0]), None)), False
    return None


class LeanBlock:
    """The training forward of a block (see the module docstring): ``block(x, scale)`` with ``x`` the block input's
    values and ``scale`` its step size (or None for the network input) returns the block output's values."""

    def __init__(self, steps: list[tuple[fx.Node, Callable, list]], output: fx.Node, input_node: fx.Node):
        self.steps, self.output, self.input = steps, output, input_node

    @classmethod
    def build(cls, sub: fx.GraphModule, input_scaled: bool, drop: set[str], p: float, rng: torch.Generator
              ) -> "LeanBlock | None":
        """The lean forward of the block module ``sub`` (one input: a quantized tensor with a step size if
        ``input_scaled``), with QDrop (probability ``p``, masks from ``rng``) on the activation quantizers named in
        ``drop``; None if a node is not supported."""
        if not enabled():
            return None
        inputs = [n for n in sub.graph.nodes if n.op == "placeholder"]
        outputs = [n for n in sub.graph.nodes if n.op == "output"]
        if len(inputs) != 1 or len(outputs) != 1:
            return None
        node_type = type(inputs[0])  # torch.fx's Node, or that of Brevitas' fx backport (its quantize pass uses it)
        if not isinstance(outputs[0].args[0], node_type):
            return None
        input_node, output = inputs[0], outputs[0].args[0]
        nodes = [n for n in sub.graph.nodes if n.op not in ("placeholder", "output")]
        steps = []
        scaled = {input_node: input_scaled}  # whether a node's output carries a step size
        for n in nodes:
            args = list(n.args)
            if n.kwargs or any(not isinstance(a, node_type) for a in args):
                return None
            if n.op == "call_function" and n.target in _ADD and len(args) == 2:
                steps.append((n, lambda a, b: (a[0] + b[0], None), args))
                scaled[n] = False
                continue
            if n.op != "call_module" or len(args) != 1:
                return None
            keep = p if n.target in drop and p > 0 else 0.0
            made = _module_step(sub.get_submodule(n.target), scaled[args[0]], keep, rng)
            if made is None:
                return None
            steps.append((n, made[0], args))
            scaled[n] = made[1]
        return cls(steps, output, input_node)

    def __call__(self, x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        env = {self.input: (x, scale)}
        for node, fn, args in self.steps:
            env[node] = fn(*(env[a] for a in args))
        return env[self.output][0]
