"""TensorRT profile: rewrites into TensorRT's explicit-quantization form.

TensorRT's ONNX parser takes symmetric signed int8 Q/DQ (zero point 0), per-channel weights on the output-channel
axis, float bias, and no operator other than DequantizeLinear on an integer tensor. The rewrites below turn a
Brevitas QCDQ export into that form without changing what it computes (each is checked by a test on ORT). Each
pass checks the whole graph before it changes anything, and raises :class:`~dfq_deploy.errors.ExportError`.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..errors import ExportError
from .graph import Graph, attr, drop_unused_constants, int_range, set_input


def fold_weight_clips_to_float_qdq(model: onnx.ModelProto) -> int:
    """``int8 const -> [Clip] -> DQ`` (a Brevitas weight) becomes ``float const -> Q -> DQ`` with the same scale.

    The float constant is the dequantized weight, so the new QuantizeLinear gives back exactly the clipped integers
    (the weight Clip is folded into the constant): TensorRT's parser wants quantized weights in this form.
    Returns the number of weights rewritten.
    """
    G = Graph(model)
    count = 0
    for dq in [n for n in G.g.node if n.op_type == "DequantizeLinear"]:
        clip, src = G.dq_source(dq)
        w = G.const(src)
        if w is None or w.dtype not in (np.int8, np.uint8):
            continue
        if clip is not None:
            w = np.clip(w, G.const(clip.input[1]), G.const(clip.input[2])).astype(w.dtype)
        w_float = G.dequantized(dq, w)
        if w_float is None:
            continue
        zp = G.const_input(dq, 2, np.zeros((), w.dtype))
        zp_name = G.add_const("weight_zero_point", zp)
        f_name = G.add_const(src, w_float)
        q_out = G.fresh(src + "_q")
        q = onnx.helper.make_node("QuantizeLinear", [f_name, dq.input[1], zp_name], [q_out],
                                  name=(dq.name or q_out) + "_weight_q", axis=attr(dq, "axis", 1))
        G.g.node.insert(list(G.g.node).index(dq), q)
        dq.input[0] = q_out
        if clip is not None and not [u for u in G.consumers.get(clip.output[0], []) if u is not dq]:
            G.g.node.remove(clip)
        count += 1
    drop_unused_constants(model)
    return count


def int32_bias_to_float(model: onnx.ModelProto) -> int:
    """Replace every ``DequantizeLinear(int32 const)`` (a quantized bias) by its float value. Returns the count."""
    G = Graph(model)
    outputs = {o.name for o in G.g.output}
    for dq in G.g.node:  # checked before anything changes
        if dq.op_type == "DequantizeLinear" and dq.output[0] in outputs:
            b = G.const(dq.input[0])
            if b is not None and b.dtype == np.int32:
                raise ExportError(f"quantized bias {dq.output[0]} is a graph output",
                                  hint="a bias feeds a layer; this graph is not a dfq-deploy export")
    count = 0
    for dq in [n for n in G.g.node if n.op_type == "DequantizeLinear"]:
        b = G.const(dq.input[0])
        if b is None or b.dtype != np.int32:
            continue
        value = G.dequantized(dq, b)
        if value is None:
            continue  # a scale that is not a constant: the rule check reports the bias
        G.rewire(dq.output[0], G.add_const(dq.output[0] + "_float", value))
        G.g.node.remove(dq)
        count += 1
    drop_unused_constants(model)
    return count


class UnrepresentableActivation(ExportError):
    """An activation quantizer has no exact signed-int8, zero-point-0 equivalent."""


def activations_to_signed_float_clip(model: onnx.ModelProto) -> dict:
    """Rewrite every activation ``Q(x) -> [Clip(int)] -> DQ`` chain to ``[Clip(float)] -> Q(int8, zp 0) -> DQ``.

    ``clamp(round(x/s), lo, hi) == round(clamp(x, lo*s, hi*s) / s)`` for a zero point of 0, so moving the integer
    Clip before QuantizeLinear as a float Clip computes the same values; an unsigned chain whose codes fit in
    ``[0, 127]`` (every activation of 7 bits or fewer) is the same chain in int8. Raises
    :class:`UnrepresentableActivation` for a non-zero zero point or unsigned codes above 127 (8-bit ``uint8``).
    """
    G = Graph(model)
    plans = []  # every chain is checked before the graph changes
    for q in [n for n in G.g.node if n.op_type == "QuantizeLinear"]:
        if G.is_const(q.input[0]):
            continue
        scale = G.const(q.input[1])
        zp = G.const_input(q, 2, np.zeros((), np.uint8))
        if scale is None or zp is None:
            continue
        where = q.name or q.output[0]
        if np.any(zp != 0):
            raise UnrepresentableActivation(f"activation quantizer {where} has zero point {zp.reshape(-1)[:4]} "
                                            "(TensorRT takes symmetric quantization only)")
        chain = G.qdq_after(q)
        if chain is None:
            readers = [u.op_type for u in G.consumers[q.output[0]]]
            raise UnrepresentableActivation(f"activation quantizer {where} feeds {readers}, not a DequantizeLinear")
        clip, dqs = chain.clip, chain.dqs
        lo, hi = int_range(zp.dtype)
        if clip is not None:
            lo, hi = int(G.const(clip.input[1])), int(G.const(clip.input[2]))
        if hi > 127 or lo < -128:
            raise UnrepresentableActivation(f"activation quantizer {where} uses codes [{lo}, {hi}], which signed int8 "
                                            "at the same scale cannot hold")
        plans.append((q, clip, dqs, lo, hi, scale, zp, where))
    moved = retyped = 0
    for q, clip, dqs, lo, hi, scale, zp, where in plans:
        if clip is not None:
            s = scale.astype(np.float32).reshape(-1)[0]
            fclip = onnx.helper.make_node(
                "Clip", [q.input[0], G.add_const(clip.input[1] + "_float", np.array(lo * s, np.float32)),
                         G.add_const(clip.input[2] + "_float", np.array(hi * s, np.float32))],
                [G.fresh(q.output[0] + "_clipped")], name=(clip.name or where) + "_float")
            G.g.node.insert(list(G.g.node).index(q), fclip)
            q.input[0] = fclip.output[0]
            for d in dqs:
                d.input[0] = q.output[0]
            G.g.node.remove(clip)
            moved += 1
        if zp.dtype != np.int8:
            for node in [q, *dqs]:
                set_input(node, 2, G.add_const("zero_point", np.zeros(zp.shape, np.int8)))
            retyped += 1
    drop_unused_constants(model)
    return {"activation_clips_moved_to_float": moved, "unsigned_activations_to_int8": retyped}
