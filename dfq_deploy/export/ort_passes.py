"""ONNX Runtime profile: graph rewrites that make a Brevitas QCDQ export run as ONNX Runtime integer kernels, each
exact (same outputs).

Brevitas exports a sub-8-bit activation as ``QuantizeLinear(int8|uint8) -> Clip(int) -> DequantizeLinear``.
ONNX Runtime's x86 QDQ fusion refuses int8 *activations* (``QDQIsInt8Allowed()`` is false off ARM), so every signed
activation chain is moved to uint8 by adding ``k`` to the zero point and to the Clip bounds:
``clamp(round(x/s) + z, lo, hi) + k == clamp(round(x/s) + z + k, lo + k, hi + k)`` and dequantization
subtracts the same shifted zero point, so the float value of every element is unchanged. ``k`` is ``-lo``, so a
b-bit activation's codes are ``[0, 2**b - 1]`` (128 for int8 without a Clip): the smallest codes that a layer after
it multiplies, which keeps the 16-bit pair sums of CPUs without VNNI in range (:mod:`dfq_deploy.isa`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx

from .graph import Graph, attr, broadcast, drop_unused_constants, input_name, set_input
from .passes import REQUANT_SUFFIX


def relu_int8_to_uint8(model: onnx.ModelProto) -> int:
    """``Relu -> Q(int8, zp 0) -> [Clip(lo, hi)] -> DQ`` becomes ``Relu -> Q(uint8, zp 0) -> Clip(max(lo, 0), hi)
    -> DQ``. Exact: after a ReLU the int8 codes are already in ``[0, hi]``; the uint8 Clip keeps int8's ceiling.

    A signed 8-bit ReLU output (``QuantScheme.trt_compatible``) shifted to uint8 with zero point 128 instead would
    stop ONNX Runtime from absorbing the Relu into the integer convolution. Returns the number of chains rewritten.
    """
    G = Graph(model)
    count = 0
    for q in [n for n in G.g.node if n.op_type == "QuantizeLinear"]:
        if G.produced_by(q.input[0], "Relu") is None:
            continue
        zp = G.const_input(q, 2)
        if zp is None or zp.dtype != np.int8 or np.any(zp != 0):
            continue
        chain = G.qdq_after(q)
        if chain is None or len(G.consumers[q.output[0]]) != 1:
            continue  # one Clip or one DequantizeLinear reads the codes
        clip, dqs = chain.clip, chain.dqs
        if not dqs or any(input_name(d, 2) is None for d in dqs):
            continue
        lo, hi = (int(G.const(clip.input[1])), int(G.const(clip.input[2]))) if clip is not None else (-128, 127)
        bounds = [G.add_const("relu_clip_lo", np.array(max(lo, 0), np.uint8)),
                  G.add_const("relu_clip_hi", np.array(hi, np.uint8))]
        q.input[2] = G.add_const(q.input[2], np.zeros(zp.shape, np.uint8))
        if clip is not None:
            clip.input[1], clip.input[2] = bounds
        else:
            clip = onnx.helper.make_node("Clip", [q.output[0], *bounds], [G.fresh(q.output[0] + "_clip")],
                                         name=(q.name or q.output[0]) + "_uint8_clip")
            G.g.node.insert(list(G.g.node).index(q) + 1, clip)
            for d in dqs:
                d.input[0] = clip.output[0]
        for d in dqs:
            d.input[2] = G.add_const(d.input[2], np.zeros(zp.shape, np.uint8))
        count += 1
    drop_unused_constants(model)
    return count


def shift_signed_activations_to_uint8(model: onnx.ModelProto) -> int:
    """Rewrite every int8 activation ``Q -> [Clip] -> DQ`` chain to uint8 (zero point + ``-lo``, 128 without a Clip).
    Returns the count.

    Weight chains (constant input) stay int8: ONNX Runtime's integer kernels want u8 activations and s8 weights.
    """
    G = Graph(model)
    count = 0
    for q in [n for n in G.g.node if n.op_type == "QuantizeLinear"]:
        if G.is_const(q.input[0]):
            continue
        zp = G.const_input(q, 2)
        if zp is None or zp.dtype != np.int8:
            continue
        chain = G.qdq_after(q)
        if chain is None:
            continue  # an unexpected consumer reads the int8 tensor: leave the chain alone
        clip, dqs = chain.clip, chain.dqs
        if clip is not None and not G.consumers.get(clip.output[0]):
            continue
        if not dqs or any(G.const_input(d, 2) is None for d in dqs):
            continue
        low = G.const_input(clip, 1) if clip is not None else None
        if clip is not None and (low is None or low.size != 1 or G.const_input(clip, 2) is None):
            continue
        shift = 128 if low is None else -int(low)  # the codes start at 0 (see the module docstring)
        new_zp = (zp.astype(np.int16) + shift).astype(np.uint8)
        q.input[2] = G.add_const(q.input[2], new_zp)
        if clip is not None:
            for k in (1, 2):
                bound = G.const(clip.input[k])
                clip.input[k] = G.add_const(clip.input[k], (bound.astype(np.int16) + shift).astype(np.uint8))
        for d in dqs:
            dzp = G.const(d.input[2])
            d.input[2] = G.add_const(d.input[2], (dzp.astype(np.int16) + shift).astype(np.uint8))
        count += 1
    drop_unused_constants(model)
    return count


_RESHAPES = ("Flatten", "Reshape", "Squeeze")


# MLAS' integer global average pool (``QLinearGlobalAveragePool``, which ONNX Runtime fuses from
# ``DQ -> GlobalAveragePool -> Q``) computes with one fixed-point multiplier and refuses, when the session runs, a
# ratio ``x_scale / (y_scale * pixels)`` outside ``[2**-32, 256)`` ("parameter out of computation range"; read in
# onnxruntime/core/mlas/lib/qlgavgpool.cpp, ``MlasCalculateParametersForGloabalAveragePool``)
POOL_RATIO_RANGE = (2.0 ** -32, 256.0)


def _pool_pixels(model: onnx.ModelProto) -> dict[str, int]:
    """Pixels per channel of every GlobalAveragePool's input, by input name, where shape inference knows them."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
              for v in (*inferred.graph.value_info, *inferred.graph.input)}
    out = {}
    for n in model.graph.node:
        dims = shapes.get(n.input[0]) if n.op_type == "GlobalAveragePool" else None
        if dims and len(dims) > 2 and all(d > 0 for d in dims[2:]):
            out[n.input[0]] = int(np.prod(dims[2:]))
    return out


def _pool_ratio_ok(G: Graph, dq: onnx.NodeProto, q: onnx.NodeProto, pixels: int | None) -> bool:
    x_scale, y_scale = G.const(dq.input[1]), G.const(q.input[1])
    if pixels is None or x_scale is None or y_scale is None or x_scale.size != 1 or y_scale.size != 1:
        return False
    ratio = float(x_scale.reshape(())) / (float(y_scale.reshape(())) * pixels)
    return POOL_RATIO_RANGE[0] <= ratio < POOL_RATIO_RANGE[1]


def _dequantized_pools(G: Graph) -> list[tuple[onnx.NodeProto, onnx.NodeProto, list[onnx.NodeProto]]]:
    """``(pool, its DequantizeLinear input, its consumers)`` of every GlobalAveragePool that reads a dequantized
    tensor."""
    out = []
    for n in [n for n in G.g.node if n.op_type == "GlobalAveragePool"]:
        src = G.produced_by(n.input[0], "DequantizeLinear")
        if src is not None:
            out.append((n, src, G.consumers.get(n.output[0], [])))
    return out


def pools_outside_integer_range(model: onnx.ModelProto) -> int:
    """A ``DQ -> GlobalAveragePool -> Q`` whose scales MLAS' integer pool cannot represent (:data:`POOL_RATIO_RANGE`:
    a 1x1 feature map pooled into a much finer grid, as MobileNetV2 at 28x28 gets) becomes ``ReduceMean`` over the
    same axes: the same mean in float, which ONNX Runtime does not fuse, instead of a session that fails when it
    runs. Returns the number of pools rewritten."""
    G = Graph(model)
    pixels = _pool_pixels(model)
    count = 0
    for n, src, users in _dequantized_pools(G):
        qs = [u for u in users if u.op_type == "QuantizeLinear"]
        if not qs:
            continue
        if all(_pool_ratio_ok(G, src, q, pixels.get(n.input[0])) for q in qs):
            continue
        n.op_type = "ReduceMean"
        del n.attribute[:]
        n.attribute.extend([onnx.helper.make_attribute("axes", [2, 3]), onnx.helper.make_attribute("keepdims", 1)])
        count += 1
    return count


def quantize_pool_outputs(model: onnx.ModelProto) -> int:
    """``DQ -> GlobalAveragePool -> Flatten|Reshape|Squeeze -> Q`` gets the same ``Q -> DQ`` right after the pool.

    A classifier head quantizes the pooled features only after flattening them, so ONNX Runtime finds no
    ``DQ -> GlobalAveragePool -> Q`` to fuse: it pooled in float, after transposing the whole last feature map out of
    its NHWC layout (three small float kernels), where ``quantize_static`` graphs run ``QLinearGlobalAveragePool``.
    A per-tensor quantization commutes with a reshape, and the
    later ``Q`` then re-quantizes values already on its grid (``round((q - z) * s / s) == q - z``, then the same
    saturation and Clip), so no output changes. Only per-tensor scales are moved (a reshape moves channel axes).
    The added ``Q`` is named like every requantization without a PyTorch counterpart (``REQUANT_SUFFIX``), so the
    layer-local parity check skips it. Returns the number of pools rewritten."""
    G = Graph(model)
    pixels = _pool_pixels(model)
    count = 0
    for n, src, users in _dequantized_pools(G):
        if len(users) != 1 or users[0].op_type not in _RESHAPES:
            continue
        after = G.consumers.get(users[0].output[0], [])
        if len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        q = after[0]
        scale = G.const(q.input[1])
        if scale is None or scale.size != 1 or (input_name(q, 2) is not None and not G.is_const(q.input[2])):
            continue
        if not _pool_ratio_ok(G, src, q, pixels.get(n.input[0])):
            continue  # MLAS' integer pool could not run it: the pool stays in float
        base = n.name or n.output[0]
        quant = onnx.helper.make_node("QuantizeLinear", [n.output[0], *q.input[1:]], [G.fresh(n.output[0] + "_q")],
                                      name=base + REQUANT_SUFFIX)
        quant.attribute.extend(q.attribute)
        dequant = onnx.helper.make_node("DequantizeLinear", [quant.output[0], *q.input[1:]],
                                        [G.fresh(n.output[0] + "_dq")], name=base + "_pool_dq")
        users[0].input[0] = dequant.output[0]
        at = list(G.g.node).index(n) + 1
        G.g.node.insert(at, quant)
        G.g.node.insert(at + 1, dequant)
        count += 1
    return count


# MLAS' x86 symmetric integer convolution (``MlasConvSym``, the kernel behind ``QLinearConv`` with int8 weights of zero
# point 0) wants input channels in multiples of 4 (``KernelInputChannelAlignment``); any other count falls back to
# im2col and the generic integer GEMM. Read in onnxruntime/core/mlas/lib/convsym.cpp (``MlasConvSymPackWSize``).
CONV_INPUT_CHANNEL_ALIGNMENT = 4
# Padding pays where the generic GEMM's reduction length K (input channels x kernel area) is short; at about 128 and
# above (a ResNet stem's 3-channel 7x7, K = 147, on large images and batches) the generic path was the faster one, so
# such convolutions are left alone (benchmarks/conv_padding.py; docs/benchmarks.md, convolution padding).
PAD_MAX_REDUCTION = 128


def pad_conv_input_channels(model: onnx.ModelProto, multiple: int = CONV_INPUT_CHANNEL_ALIGNMENT,
                            max_reduction: int = PAD_MAX_REDUCTION) -> int:
    """Give every quantized ``Conv`` (group 1) whose input channels are not a multiple of ``multiple`` zero channels
    up to the next multiple: a ``Pad`` of the integer input with its zero point (so the new channels dequantize to
    exactly 0.0) and zero-point weights for them (so they dequantize to 0.0 too).

    Each added product is ``0.0 * 0.0``, so every output is unchanged, bit for bit, in float and in the integer
    kernel. A network's first convolution is the usual case: 1 channel (Fashion-MNIST) or 3 (RGB), where the
    unpadded integer convolution is slower than the float one (docs/benchmarks.md, convolution padding).

    Only convolutions with a reduction length (input channels x kernel area) under ``max_reduction`` are padded
    (see :data:`PAD_MAX_REDUCTION`), whose weights are constants behind a ``DequantizeLinear`` (through an optional
    ``Clip``) and whose input comes from a ``DequantizeLinear`` with a per-tensor scale and zero point. Returns the
    number of convolutions padded.
    """
    G = Graph(model)
    count = 0
    outputs = {o.name for o in G.g.output}
    for conv in [n for n in G.g.node if n.op_type == "Conv"]:
        plan = _channel_pad_plan(G, conv, multiple, max_reduction)
        if plan is not None:
            _pad_input_channels(G, conv, plan, outputs)
            count += 1
    drop_unused_constants(model)
    return count


class _ChannelPad(NamedTuple):
    """What :func:`pad_conv_input_channels` changes on one convolution."""

    dq_x: onnx.NodeProto          # the input's DequantizeLinear
    dq_w: onnx.NodeProto          # the weight's DequantizeLinear
    clip: onnx.NodeProto | None   # the weight's Clip
    w_name: str                   # the integer weight constant
    w: np.ndarray
    w_zp: np.ndarray
    x_zp: np.ndarray
    extra: int                    # channels added


def _channel_pad_plan(G: Graph, conv: onnx.NodeProto, multiple: int, max_reduction: int) -> _ChannelPad | None:
    """The padding of ``conv``'s input channels, or None where :func:`pad_conv_input_channels` leaves it alone."""
    dq_x, dq_w = G.produced_by(conv.input[0], "DequantizeLinear"), G.produced_by(conv.input[1], "DequantizeLinear")
    if attr(conv, "group", 1) != 1 or dq_x is None or dq_w is None:
        return None
    clip, w_name = G.dq_source(dq_w)
    w = G.const(w_name)
    if w is None or w.ndim != 4 or w.shape[1] % multiple == 0 or int(np.prod(w.shape[1:])) >= max_reduction:
        return None
    if w.dtype != np.int8:
        return None  # uint8 weights never take the symmetric path the padding is for (no gain measured either)
    w_zp = G.const_input(dq_w, 2, np.zeros((), w.dtype))
    x_scale = G.const(dq_x.input[1])
    x_zp = G.const_input(dq_x, 2)
    if w_zp is None or x_scale is None or x_scale.size != 1 or x_zp is None or x_zp.size != 1:
        return None
    chain = [w_name, dq_w.output[0]] + ([clip.output[0]] if clip is not None else [])
    if any(len(G.consumers.get(t, [])) != 1 for t in chain):
        return None  # a weight shared with another node is left alone
    return _ChannelPad(dq_x, dq_w, clip, w_name, w, w_zp, x_zp, -w.shape[1] % multiple)


def _pad_input_channels(G: Graph, conv: onnx.NodeProto, p: _ChannelPad, outputs: set[str]) -> None:
    """Zero-point weights for the new channels, and a ``Pad -> DequantizeLinear`` of the integer input before
    ``conv``."""
    w, dq_x, extra = p.w, p.dq_x, p.extra
    fill = np.broadcast_to(broadcast(p.w_zp, 4, 0).astype(w.dtype), (w.shape[0], extra, *w.shape[2:]))
    padded_w = G.add_const(p.w_name + "_chpad", np.concatenate([w, fill], axis=1))
    if p.clip is not None:
        p.clip.input[0] = padded_w
    else:
        p.dq_w.input[0] = padded_w
    pads = G.add_const("chpad_pads", np.array([0, 0, 0, 0, 0, extra, 0, 0], np.int64))
    base = conv.name or conv.output[0]
    value = dq_x.input[2] if p.x_zp.ndim == 0 else G.add_const("chpad_value", p.x_zp.reshape(()))  # Pad: a scalar
    pad = onnx.helper.make_node("Pad", [dq_x.input[0], pads, value], [G.fresh(dq_x.input[0] + "_chpad")],
                                name=base + "_input_channel_pad", mode="constant")
    dq = onnx.helper.make_node("DequantizeLinear", [pad.output[0], *dq_x.input[1:]],
                               [G.fresh(dq_x.output[0] + "_chpad")], name=base + "_input_channel_pad_dq")
    dq.attribute.extend(dq_x.attribute)
    conv.input[0] = dq.output[0]
    at = list(G.g.node).index(conv)
    G.g.node.insert(at, pad)
    G.g.node.insert(at + 1, dq)
    if not any(dq_x.output[0] in n.input for n in G.g.node) and dq_x.output[0] not in outputs:
        G.g.node.remove(dq_x)  # it fed only this Conv


def unsigned_weights_where_pairs_saturate(model: onnx.ModelProto, layers: set[str] | None = None) -> int:
    """Store the weights of every integer Conv/Gemm whose 16-bit pair sums can saturate (:mod:`.pair_sums`) as
    uint8 codes with zero point 128 instead of int8 codes with zero point 0: ``(w + 128) - 128 == w``, so every
    weight dequantizes to the same float and the layer computes the same function.

    Why: with uint8 weights ONNX Runtime's x86 kernels multiply uint8 x uint8 in 16-bit words summed into 32 bits
    (no saturating 16-bit pair sum), so the layer is exact on CPUs without VNNI too, at full 8-bit weight precision.
    It costs speed (a non-zero weight zero point leaves MLAS' symmetric convolution: docs/benchmarks.md), so the
    portable scheme trains weights that never need it, and this pass is the safety net for a layer the scheme did
    not foresee; only the layers named in ``layers`` (default: every saturating one) are rewritten. Returns the
    count.
    """
    from .pair_sums import check_pair_sums

    if layers is None:
        layers = {layer.node for layer in check_pair_sums(model).saturating}
    G = Graph(model)
    count = 0
    for n in G.g.node:
        if (n.name or n.output[0]) not in layers or len(n.input) < 2:
            continue
        dq = G.produced_by(n.input[1], "DequantizeLinear")
        if dq is None or len(G.consumers.get(dq.output[0], [])) != 1:
            continue
        clip, src = G.dq_source(dq)
        w = G.const(src)
        zp = G.const_input(dq, 2, np.zeros((), np.int8))
        if w is None or w.dtype != np.int8 or zp is None or zp.dtype != np.int8 or np.any(zp != 0):
            continue
        if len(G.consumers.get(src, [])) != 1:
            continue  # a weight shared with another node is left alone
        shifted = (w.astype(np.int16) + 128).astype(np.uint8)
        if clip is not None:
            clip.input[0] = G.add_const(src + "_u8", shifted)
            for k in (1, 2):
                bound = G.const(clip.input[k])
                clip.input[k] = G.add_const(clip.input[k] + "_u8", (bound.astype(np.int16) + 128).astype(np.uint8))
        else:
            dq.input[0] = G.add_const(src + "_u8", shifted)
        set_input(dq, 2, G.add_const(dq.name + "_zero_point_u8", np.full(zp.shape, 128, np.uint8)))
        count += 1
    drop_unused_constants(model)
    return count
