"""Turn a float CNN into a Brevitas fake-quant model for a bit-width scheme.

Everything quantization-specific comes from Brevitas: its FX graph preprocessing (BatchNorm merged into the
convolutions, shared modules duplicated), its ``quantize`` graph pass (input quantizer, QuantReLU, aligned residual
adds, requantized layer outputs) and its quantizers varied with ``.let(bit_width=...)``.

Where BatchNorm lives is decided here, before any quantized training: it is merged into the preceding convolution
(conv weight and bias absorb it), so the network that is trained, evaluated and exported is one and the same.
Folding BN *after* quantized training would change the function (the rounding grid moves with the weights).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import torch
from torch import nn

from ..errors import ConfigError, ModelError, TrainingError
from ..isa import PAIR_SUM_LIMIT
from ..progress import leave_inner_bars

_COMPUTE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class QuantScheme:
    """Bit widths of a quantized student.

    Attributes:
        weight_bits: weight bits of every Conv/Linear except the first and last.
        act_bits: activation bits everywhere except the network input and the last layer's input.
        first_last_bits: weight bits of the first and last compute layers and activation bits of their inputs.
        per_channel: per-output-channel weight scales (else one scale per tensor).
        trt_compatible: 8-bit activations after ReLU are signed int8 (zero point 0, codes 0..127 in use), as
            TensorRT requires: unsigned 8-bit codes 0..255 do not fit int8 at the same scale. Activations of 7 bits
            or fewer fit either way, so only 8-bit schemes change (7 bits of magnitude after ReLU, what TensorRT's
            int8 gives a ReLU output anyway). The onnxruntime profile turns these back into uint8 exactly, so the
            same model runs integer kernels there too. ``train-export --target tensorrt`` sets it.
        portable: every integer Conv/Gemm computes the same integers on every CPU (:mod:`dfq_deploy.isa`): a layer
            whose input activation has 8 bits gets 7-bit weights (:func:`portable_weight_bits`), trained so, so the
            exported model is the trained model in both profiles and keeps MLAS' fast symmetric kernels. (Storing
            8-bit weights as uint8 instead is exact too, but took the first convolution off the symmetric kernel:
            docs/benchmarks.md#same-integers-on-every-cpu.) False keeps full 8-bit weight codes, exact only where
            int8 dot products accumulate in 32 bits (x86 VNNI / AMX, ARM, GPUs): ONNX Runtime's kernels saturate on
            x86 CPUs without VNNI (``train-export --vnni-only``; recorded in the model's metadata).
        weight_grid: ``narrow`` (Brevitas' symmetric weight codes, step ``max|w| / (2**(b-1) - 1)``) or ``full``
            (every signed code, the lowest too, at the smallest step that fits each channel: :mod:`.grid`) for the
            layers whose weights have fewer than 8 bits and whose inputs have fewer than 8; edge layers stay narrow.
    """

    weight_bits: int = 4
    act_bits: int = 4
    first_last_bits: int = 8
    per_channel: bool = True
    trt_compatible: bool = False
    portable: bool = True
    weight_grid: str = "narrow"

    def __post_init__(self):
        for name in ("weight_bits", "act_bits", "first_last_bits"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 2 <= v <= 8:
                raise ConfigError(f"{name}={v!r} is out of range",
                                  hint="integer kernels take 2..8 bits; use e.g. --bits 4 or --bits 8")
        for name in ("per_channel", "trt_compatible", "portable"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be true or false")
        from .grid import WEIGHT_GRIDS

        if self.weight_grid not in WEIGHT_GRIDS:
            raise ConfigError(f"weight_grid={self.weight_grid!r} is not a weight grid",
                              hint=f"use one of {', '.join(WEIGHT_GRIDS)}")

    @property
    def tag(self) -> str:
        return f"W{self.weight_bits}A{self.act_bits}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_tag(cls, tag: str, **kw) -> "QuantScheme":
        """Parse ``W4A4`` / ``w8a8`` or a single number (``4`` means W4A4)."""
        import re

        t = str(tag).strip().upper()
        m = re.fullmatch(r"W(\d)A(\d)", t) or re.fullmatch(r"(\d)", t)
        if not m:
            raise ConfigError(f"cannot read bit widths from {tag!r}", hint="write W4A4, W8A8 or a single number like 4")
        w = int(m.group(1))
        a = int(m.group(2)) if m.lastindex == 2 else w
        return cls(weight_bits=w, act_bits=a, **kw)


def portable_weight_bits(weight_bits: int, input_bits: int) -> int:
    """The largest weight bit width <= ``weight_bits`` whose narrow symmetric codes (Brevitas' weight grid, zero point
    0), multiplied by any uint8 code of an ``input_bits``-bit activation, keep every pair of products within
    :data:`PAIR_SUM_LIMIT`, so that CPUs without VNNI compute what the others do (:mod:`dfq_deploy.isa`). The
    onnxruntime profile stores a b-bit activation as uint8 codes in ``[0, 2**b - 1]`` (signed ones shifted up), so
    8-bit inputs allow weight codes up to 64 (7 bits), 7-bit inputs 129 (8 bits)."""
    high = 2 ** input_bits - 1
    bits = weight_bits
    while bits > 2 and 2 * high * (2 ** (bits - 1) - 1) > PAIR_SUM_LIMIT:
        bits -= 1
    return bits


def _no_inplace(model: nn.Module) -> None:
    """Make every in-place activation of ``model`` (torchvision's ``Hardswish(inplace=True)``, ``SiLU``, ``ReLU``...)
    compute out of place. In the student such an activation follows a quantizer whose output is also read elsewhere:
    by the parity check's hooks, by block reconstruction's cached activations, by a residual branch. Written in
    place, it changes what the quantizer is seen to output, so the exported graph (which cannot write in place) and
    the recorded PyTorch values no longer describe the same network."""
    for m in model.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False


def _functional_no_inplace(gm: torch.fx.GraphModule) -> None:
    """The same for functional calls in a traced graph (``F.relu(x, inplace=True)`` in GoogLeNet's blocks)."""
    changed = False
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.kwargs.get("inplace") is True:
            node.kwargs = {**node.kwargs, "inplace": False}
            changed = True
    if changed:
        gm.recompile()


def plain_value(x):
    """``x`` as a plain tensor: a Brevitas QuantTensor's value (the same numbers), anything else unchanged."""
    from brevitas.quant_tensor import QuantTensor

    return x.value if isinstance(x, QuantTensor) else x


def _unwrap_for_tensor_methods(gm: torch.fx.GraphModule) -> None:
    """Feed a plain tensor to every tensor method a Brevitas QuantTensor does not have (``chunk`` in ShuffleNet's
    channel split, ``mean``, ``unsqueeze``...): the method then runs on the same values in float, and the quantizer
    Brevitas put after it requantizes, in PyTorch as in the exported graph. (Function calls need no help: QuantTensor
    passes the functions it does not implement its plain value.)"""
    from brevitas.quant_tensor import IntQuantTensor

    changed = False
    for node in list(gm.graph.nodes):
        if node.op != "call_method" or hasattr(IntQuantTensor, node.target) or not node.args:
            continue
        with gm.graph.inserting_before(node):
            plain = gm.graph.call_function(plain_value, (node.args[0],))
        node.args = (plain, *node.args[1:])
        changed = True
    if changed:
        gm.recompile()


def _activation_products(gm: torch.fx.GraphModule) -> list[str]:
    """Where ``gm`` multiplies two activations as matrices (attention: ``MultiheadAttention``, ``matmul``,
    ``einsum``...), which no Conv/Gemm integer kernel with constant weights computes."""
    import operator

    functions = {torch.matmul, torch.bmm, torch.baddbmm, torch.einsum, operator.matmul,
                 nn.functional.scaled_dot_product_attention}
    found = [name for name, m in gm.named_modules() if isinstance(m, nn.MultiheadAttention)]
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in functions or \
                node.op == "call_method" and node.target in ("matmul", "bmm", "baddbmm"):
            found.append(f"{node.name} ({getattr(node.target, '__name__', node.target)})")
    return found


def _compute_layer_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, _COMPUTE)]


def quantize_model(model: nn.Module, scheme: QuantScheme) -> torch.fx.GraphModule:
    """Return a Brevitas fake-quant copy of ``model`` (BN merged, float model untouched).

    Activation scales are uninitialised until :func:`calibrate` runs on some (synthetic) images.

    Raises:
        ModelError: the model cannot be traced by torch.fx (data-dependent control flow), multiplies activations
            with each other, or has no Conv/Linear layer.
    """
    from brevitas.graph.quantize import quantize

    from ..device import module_device

    graph = _prepared_graph(model)
    names = _compute_layer_names(graph)
    if not names:
        raise ModelError("the model has no Conv or Linear layer to quantize")
    compute_map, act_map, ident_map = _layer_maps(scheme, names)
    qmodel = _quantize_graph(quantize, graph, quant_identity_map=ident_map, compute_layer_map=compute_map,
                             quant_act_map=act_map, unsigned_act_tuple=(nn.ReLU, nn.ReLU6))
    _unwrap_for_tensor_methods(qmodel)
    if scheme.first_last_bits != scheme.act_bits:
        _set_edge_input_bits(qmodel, names[0], names[-1], scheme.first_last_bits, signed_8bit=scheme.trt_compatible)
    # Brevitas creates its quantizers' parameters on the CPU: follow the float model (GPU training)
    return qmodel.to(module_device(model))


def _prepared_graph(model: nn.Module) -> torch.fx.GraphModule:
    """A traced, BN-merged copy of ``model`` ready for Brevitas' ``quantize`` pass (no in-place activations).

    Raises:
        ModelError: untraceable, or it multiplies activations with each other.
    """
    import copy

    from brevitas.graph.quantize import preprocess_for_quantize

    model = copy.deepcopy(model).eval()
    _no_inplace(model)
    try:
        # relu6_to_relu=False: keep the teacher's function (ReLU6 keeps its 6.0 ceiling as the initial range)
        graph = preprocess_for_quantize(model, relu6_to_relu=False, equalize_iters=0, merge_bn=True)
    except Exception as e:  # torch.fx raises many types for untraceable code
        raise ModelError(f"cannot trace the model with torch.fx: {type(e).__name__}: {e}",
                         hint="models must be traceable (no data-dependent Python control flow)") from e
    _no_inplace(graph)  # Brevitas turns functional activations into modules, keeping their inplace flag
    _functional_no_inplace(graph)
    attention = _activation_products(graph)
    if attention:
        raise ModelError(f"the model multiplies activations with each other (attention: {', '.join(attention[:3])}"
                         f"{', ...' if len(attention) > 3 else ''}), which cannot run as an integer Conv/Gemm with "
                         "constant weights", hint="quantize a convolutional model (ResNet, RegNet, MobileNet, "
                         "EfficientNet, ConvNeXt...; docs/models.md lists what passes)")
    return graph


def _layer_maps(scheme: QuantScheme, names: list[str]) -> tuple[dict, dict, dict]:
    """Brevitas' layer maps for ``scheme`` (compute layers, activations, identities) on a graph whose Conv/Linear
    layers are ``names`` in order (the first and last take ``first_last_bits``)."""
    import brevitas.nn as qnn
    from brevitas.quant import (Int8ActPerTensorFloat, Int8ActPerTensorFloatMinMaxInit, Int8WeightPerChannelFloat,
                                Int8WeightPerTensorFloat, Int32Bias, Uint8ActPerTensorFloat,
                                Uint8ActPerTensorFloatMaxInit)

    edge = {names[0], names[-1]}
    a, fl = scheme.act_bits, scheme.first_last_bits
    wq = Int8WeightPerChannelFloat if scheme.per_channel else Int8WeightPerTensorFloat

    def weight_bits(name: str) -> int:
        bits = fl if name in edge else scheme.weight_bits
        # an edge layer's input has first_last_bits, or the scheme's bits when its quantizer is shared: the larger
        input_bits = max(fl, a) if name in edge else a
        return portable_weight_bits(bits, input_bits) if scheme.portable else bits

    def narrow(name: str) -> bool:
        return scheme.weight_grid == "narrow" or name in edge or weight_bits(name) >= 8 or a >= 8

    # Brevitas evaluates a value that is a *lambda* (checked by name) of (module, name) per layer
    wbits = lambda module, name: weight_bits(name)  # noqa: E731
    layer_kw = {"weight_quant": wq, "weight_bit_width": wbits, "bias_quant": Int32Bias, "return_quant_tensor": True}
    if scheme.weight_grid != "narrow":
        from .grid import FullGridStats

        layer_kw.update(weight_narrow_range=lambda module, name: narrow(name),  # noqa: E731
                        weight_scaling_stats_impl=FullGridStats)
    compute_map = {nn.Conv1d: (qnn.QuantConv1d, layer_kw), nn.Conv2d: (qnn.QuantConv2d, layer_kw),
                   nn.Conv3d: (qnn.QuantConv3d, layer_kw), nn.Linear: (qnn.QuantLinear, layer_kw),
                   nn.AvgPool2d: None}
    signed_relu = scheme.trt_compatible and a == 8  # see QuantScheme.trt_compatible
    relu_quant = Int8ActPerTensorFloat if signed_relu else Uint8ActPerTensorFloat
    relu6_quant = (Int8ActPerTensorFloatMinMaxInit.let(min_val=-6.0) if signed_relu
                   else Uint8ActPerTensorFloatMaxInit)
    act_map = {
        nn.ReLU: (qnn.QuantReLU, {"act_quant": relu_quant.let(bit_width=a), "return_quant_tensor": True}),
        nn.ReLU6: (qnn.QuantReLU, {"act_quant": relu6_quant.let(bit_width=a), "max_val": 6.0,
                                   "return_quant_tensor": True}),
    }
    ident_map = {
        "signed": (qnn.QuantIdentity, {"act_quant": Int8ActPerTensorFloat.let(bit_width=a),
                                       "return_quant_tensor": True}),
        "unsigned": (qnn.QuantIdentity, {"act_quant": relu_quant.let(bit_width=a), "return_quant_tensor": True}),
    }
    return compute_map, act_map, ident_map


def _quantize_graph(quantize, graph: torch.fx.GraphModule, **kw) -> torch.fx.GraphModule:
    """Brevitas' ``quantize`` pass, with its search for one grid per residual Add and Concat bounded by the graph's
    size. Each round of that search aligns one join, so a graph needs about as many rounds as it has joins; where
    the search cannot settle (an add reached through a reshape of a concatenation: it re-aligns the concatenation's
    inputs every round) Brevitas would go on for 9999 rounds of rebuilding the graph, hours on a small model. The
    model is refused instead, naming the joins."""
    import operator

    from brevitas.graph import quantize_impl

    def is_join(n) -> bool:
        return (n.op == "call_function" and n.target in (torch.add, operator.add, operator.iadd, torch.cat)
                or n.op == "call_method" and n.target in ("add", "add_"))

    joins = [n.name for n in graph.graph.nodes if is_join(n)]
    saved = quantize_impl.MAX_RESIDUAL_ITERS
    quantize_impl.MAX_RESIDUAL_ITERS = 4 * len(joins) + 16
    try:
        return quantize(graph, **kw)
    except RuntimeError as e:
        if "Residual handler" not in str(e):
            raise
        raise ModelError(f"the quantizer found no common grid for the residual adds and concatenations of this model "
                         f"({', '.join(joins[:4])}{', ...' if len(joins) > 4 else ''}): a residual add is reached "
                         "through a reshape or transpose of a concatenation (a channel shuffle before an add)",
                         hint="shuffle after the add instead, or pass the shuffled tensor through an activation "
                              "before it is added") from e
    finally:
        quantize_impl.MAX_RESIDUAL_ITERS = saved


def _input_quantizer(gm: torch.fx.GraphModule, layer: str):
    """The QuantIdentity that quantizes ``layer``'s input (walking back through pooling/flatten), or None."""
    import brevitas.nn as qnn

    node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer)
    src = node.all_input_nodes[0]
    while True:
        if src.op == "call_module" and isinstance(gm.get_submodule(src.target), qnn.QuantIdentity):
            return src
        if src.op == "placeholder" or not src.all_input_nodes:
            return None
        mod = gm.get_submodule(src.target) if src.op == "call_module" else None
        passthrough = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.Flatten, nn.Dropout, nn.MaxPool2d, nn.Identity)
        if src.op == "call_module" and not isinstance(mod, passthrough):
            return None
        if src.op == "call_function" and src.target not in (torch.flatten,):
            return None
        src = src.all_input_nodes[0]


def _set_edge_input_bits(gm: torch.fx.GraphModule, first: str, last: str, bits: int, signed_8bit: bool) -> None:
    """Give the quantizers of the network input, the last layer's input and the logits ``bits`` bits
    (signed when ``signed_8bit`` and ``bits == 8``, see ``QuantScheme.trt_compatible``)."""
    import brevitas.nn as qnn
    from brevitas.quant import Int8ActPerTensorFloat

    quant_nodes = [_input_quantizer(gm, first), _input_quantizer(gm, last)]
    last_node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == last)
    quant_nodes += [u for u in last_node.users   # the logits' requantization
                    if u.op == "call_module" and isinstance(gm.get_submodule(u.target), qnn.QuantIdentity)]
    for node in quant_nodes:
        if node is None or len(node.users) != 1:
            continue  # shared with a residual branch: keep the scheme's bits so scales stay aligned
        old = gm.get_submodule(node.target)
        quant = old.act_quant.quant_injector
        if signed_8bit and bits == 8 and not quant.signed:
            quant = Int8ActPerTensorFloat
        quant = quant.let(bit_width=bits)
        gm.add_submodule(node.target, qnn.QuantIdentity(act_quant=quant, return_quant_tensor=old.return_quant_tensor))


def calibrate(qmodel: nn.Module, batches: Iterable[torch.Tensor], progress: bool = False) -> None:
    """Initialise activation scales from float statistics on ``batches`` (Brevitas ``calibration_mode``; a progress
    bar with ``progress``)."""
    from brevitas.graph.calibrate import calibration_mode
    from tqdm.auto import tqdm

    # Brevitas' calibration_mode records and restores each module's quantizer state, module by module; a quantizer
    # shared by two modules (a concatenation's aligned inputs, as in DenseNet) is restored from the second module's
    # record, taken after the first had switched it to observing: it stayed an observer, passing its input through
    # unquantized while the export quantized it. Every quantizer's own state is put back here.
    quantizers = {id(m): m for m in qmodel.modules() if hasattr(m, "observer_only")}
    before = {key: m.observer_only for key, m in quantizers.items()}
    qmodel.eval()
    batches = list(batches)
    with torch.no_grad(), calibration_mode(qmodel):
        for x in tqdm(batches, desc="calibration", disable=not progress, leave=leave_inner_bars()):
            qmodel(x)
    for key, m in quantizers.items():
        m.observer_only = before[key]
    # a non-finite step size would surface much later as Brevitas' "Scaling factors are different" (NaN != NaN)
    bad = [name for name, t in qmodel.state_dict().items()
           if "scaling_impl" in name and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise TrainingError(f"calibration gave {len(bad)} quantizer(s) a non-finite step size, first "
                            f"{bad[0].split('.')[0]}: the calibration images or the model's activations overflow",
                            hint="check that the calibration images are finite and the teacher's activations stay "
                                 "in float32's range on them")


def load_quantized_state(qmodel: nn.Module, state: dict) -> None:
    """Copy ``state`` (a ``state_dict`` of the same quantized model) into ``qmodel``'s own parameters and buffers,
    in place, for a model that is calibrated already (a run that resumes after its calibration).

    Why not ``load_state_dict``: Brevitas' runtime-statistics scaling replaces its ``value`` parameter with a new
    object when a state dict is loaded. For inference that changes nothing, but a model that trains on then loses
    the ties Brevitas makes between quantizers (one step size shared by a residual add's inputs, or, after a
    ``deepcopy``, with another model), and an optimiser built before the load updates parameters the model no longer
    uses.

    Raises:
        ValueError: ``state`` does not have exactly ``qmodel``'s keys and shapes, or ``qmodel`` is not calibrated
            (its state dict holds values that are not its own tensors).
    """
    own = qmodel.state_dict(keep_vars=True)
    if own.keys() != state.keys():
        raise ValueError(f"state keys differ: {sorted(own.keys() ^ state.keys())[:4]}")
    live = {id(t) for t in qmodel.parameters()} | {id(t) for t in qmodel.buffers()}
    with torch.no_grad():
        for key, value in state.items():
            target = own[key]
            if id(target) not in live or target.shape != value.shape:
                raise ValueError(f"{key}: not a calibrated parameter or buffer of this shape")
            target.copy_(value)
