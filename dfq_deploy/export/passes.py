"""ONNX graph rewrites that make a Brevitas QCDQ export run as integer kernels, each exact (same outputs).

Brevitas exports a sub-8-bit activation as ``QuantizeLinear(int8|uint8) -> Clip(int) -> DequantizeLinear``.
ONNX Runtime's x86 QDQ fusion refuses int8 *activations* (``QDQIsInt8Allowed()`` is false off ARM), so every signed
activation chain is moved to uint8 by adding 128 to the zero point and to the Clip bounds:
``clamp(round(x/s) + z, lo, hi) + 128 == clamp(round(x/s) + z + 128, lo + 128, hi + 128)`` and dequantization
subtracts the same shifted zero point, so the float value of every element is unchanged.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


class _Graph:
    """Small index over an ONNX graph: producers, consumers and constants by tensor name."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.g = model.graph
        self.init = {t.name: t for t in self.g.initializer}
        self.const_nodes = {n.output[0]: n for n in self.g.node if n.op_type == "Constant"}
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self._names = {t.name for t in self.g.initializer} | {o for n in self.g.node for o in n.output}
        self._counter = 0

    def const(self, name: str) -> np.ndarray | None:
        if name in self.init:
            return numpy_helper.to_array(self.init[name])
        node = self.const_nodes.get(name)
        if node is not None:
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def is_const(self, name: str) -> bool:
        return self.const(name) is not None

    def fresh(self, base: str) -> str:
        """A tensor name not used anywhere in the graph yet (and reserved from now on)."""
        while True:
            self._counter += 1
            name = f"{base}__dfq{self._counter}"
            if name not in self._names:
                self._names.add(name)
                return name

    def add_const(self, base: str, value: np.ndarray) -> str:
        """Add a fresh initializer (constants may be shared by several nodes, so never edit one in place)."""
        name = self.fresh(base)
        t = numpy_helper.from_array(value, name)
        self.g.initializer.append(t)
        self.init[name] = t
        return name


def relu_int8_to_uint8(model: onnx.ModelProto) -> int:
    """``Relu -> Q(int8, zp 0) -> [Clip(lo, hi)] -> DQ`` becomes ``Relu -> Q(uint8, zp 0) -> Clip(max(lo, 0), hi)
    -> DQ``. Exact: after a ReLU the int8 codes are already in ``[0, hi]``; the uint8 Clip keeps int8's ceiling.

    A signed 8-bit ReLU output (``QuantScheme.trt_compatible``) shifted to uint8 with zero point 128 instead would
    stop ONNX Runtime from absorbing the Relu into the integer convolution. Returns the number of chains rewritten.
    """
    G = _Graph(model)
    count = 0
    for q in [n for n in G.g.node if n.op_type == "QuantizeLinear"]:
        src = G.producer.get(q.input[0])
        if src is None or src.op_type != "Relu" or len(q.input) < 3:
            continue
        zp = G.const(q.input[2])
        if zp is None or zp.dtype != np.int8 or np.any(zp != 0):
            continue
        users = G.consumers.get(q.output[0], [])
        clips = [u for u in users if u.op_type == "Clip"]
        if len(users) != 1 or users[0].op_type not in ("Clip", "DequantizeLinear"):
            continue
        dqs = G.consumers.get(clips[0].output[0], []) if clips else users
        if not dqs or any(d.op_type != "DequantizeLinear" or len(d.input) < 3 for d in dqs):
            continue
        lo, hi = (int(G.const(clips[0].input[1])), int(G.const(clips[0].input[2]))) if clips else (-128, 127)
        bounds = [G.add_const("relu_clip_lo", np.array(max(lo, 0), np.uint8)),
                  G.add_const("relu_clip_hi", np.array(hi, np.uint8))]
        q.input[2] = G.add_const(q.input[2], np.zeros(zp.shape, np.uint8))
        if clips:
            clips[0].input[1], clips[0].input[2] = bounds
        else:
            clip = onnx.helper.make_node("Clip", [q.output[0], *bounds], [G.fresh(q.output[0] + "_clip")],
                                         name=(q.name or q.output[0]) + "_uint8_clip")
            G.g.node.insert(list(G.g.node).index(q) + 1, clip)
            for d in dqs:
                d.input[0] = clip.output[0]
        for d in dqs:
            d.input[2] = G.add_const(d.input[2], np.zeros(zp.shape, np.uint8))
        count += 1
    _drop_unused_constants(model)
    return count


def shift_signed_activations_to_uint8(model: onnx.ModelProto) -> int:
    """Rewrite every int8 activation ``Q -> [Clip] -> DQ`` chain to uint8 (zero point + 128). Returns the count.

    Weight chains (constant input) stay int8: ONNX Runtime's integer kernels want u8 activations and s8 weights.
    """
    G = _Graph(model)
    count = 0
    for q in [n for n in G.g.node if n.op_type == "QuantizeLinear"]:
        if G.is_const(q.input[0]) or len(q.input) < 3:
            continue
        zp = G.const(q.input[2])
        if zp is None or zp.dtype != np.int8:
            continue
        # collect the chain: Q -> optional Clip -> one or more DQ
        users = G.consumers.get(q.output[0], [])
        clips = [u for u in users if u.op_type == "Clip"]
        dqs = [u for u in users if u.op_type == "DequantizeLinear"]
        if len(clips) + len(dqs) != len(users) or len(clips) > 1:
            continue  # an unexpected consumer reads the int8 tensor: leave the chain alone
        if clips:
            clip_users = G.consumers.get(clips[0].output[0], [])
            if not clip_users or any(u.op_type != "DequantizeLinear" for u in clip_users):
                continue
            dqs += clip_users
        if not dqs or any(len(d.input) < 3 or G.const(d.input[2]) is None for d in dqs):
            continue
        new_zp = (zp.astype(np.int16) + 128).astype(np.uint8)
        q.input[2] = G.add_const(q.input[2], new_zp)
        for clip in clips:
            for k in (1, 2):
                bound = G.const(clip.input[k])
                clip.input[k] = G.add_const(clip.input[k], (bound.astype(np.int16) + 128).astype(np.uint8))
        for d in dqs:
            dzp = G.const(d.input[2])
            d.input[2] = G.add_const(d.input[2], (dzp.astype(np.int16) + 128).astype(np.uint8))
        count += 1
    _drop_unused_constants(model)
    return count


def _drop_unused_constants(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    dead = [n for n in model.graph.node if n.op_type == "Constant" and n.output[0] not in used]
    for n in dead:
        model.graph.node.remove(n)


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Replace the model's ``metadata_props`` with ``metadata`` (string values)."""
    del model.metadata_props[:]
    for k, v in metadata.items():
        p = model.metadata_props.add()
        p.key, p.value = str(k), str(v)


# --- TensorRT explicit-quantization form -----------------------------------------------------------------------
# TensorRT's ONNX parser takes symmetric signed int8 Q/DQ (zero point 0), per-channel weights on the output-channel
# axis, float bias, and no operator other than DequantizeLinear on an integer tensor. The rewrites below turn a
# Brevitas QCDQ export into that form without changing what it computes (each is checked by a test on ORT).

def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _broadcast(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis] = v.size
    return v.reshape(shape)


def _int_range(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def fold_weight_clips_to_float_qdq(model: onnx.ModelProto) -> int:
    """``int8 const -> [Clip] -> DQ`` (a Brevitas weight) becomes ``float const -> Q -> DQ`` with the same scale.

    The float constant is the dequantized weight, so the new QuantizeLinear gives back exactly the clipped integers
    (the weight Clip is folded into the constant): TensorRT's parser wants quantized weights in this form.
    Returns the number of weights rewritten.
    """
    G = _Graph(model)
    count = 0
    for dq in [n for n in G.g.node if n.op_type == "DequantizeLinear"]:
        src, clip = dq.input[0], None
        node = G.producer.get(src)
        if node is not None and node.op_type == "Clip" and G.is_const(node.input[0]):
            clip, src = node, node.input[0]
        w = G.const(src)
        if w is None or w.dtype not in (np.int8, np.uint8):
            continue
        if clip is not None:
            w = np.clip(w, G.const(clip.input[1]), G.const(clip.input[2])).astype(w.dtype)
        scale = G.const(dq.input[1])
        zp = G.const(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros((), w.dtype)
        if scale is None or zp is None:
            continue
        axis = _attr(dq, "axis", 1) % max(1, w.ndim)
        w_float = ((w.astype(np.int32) - _broadcast(zp.astype(np.int32), w.ndim, axis)).astype(np.float32)
                   * _broadcast(scale.astype(np.float32), w.ndim, axis)).astype(np.float32)
        zp_name = G.add_const("weight_zero_point", zp)
        f_name = G.add_const(src, w_float)
        q_out = G.fresh(src + "_q")
        q = onnx.helper.make_node("QuantizeLinear", [f_name, dq.input[1], zp_name], [q_out],
                                  name=(dq.name or q_out) + "_weight_q", axis=_attr(dq, "axis", 1))
        G.g.node.insert(list(G.g.node).index(dq), q)
        dq.input[0] = q_out
        if clip is not None and not [u for u in G.consumers.get(clip.output[0], []) if u is not dq]:
            G.g.node.remove(clip)
        count += 1
    _drop_unused_constants(model)
    return count


def int32_bias_to_float(model: onnx.ModelProto) -> int:
    """Replace every ``DequantizeLinear(int32 const)`` (a quantized bias) by its float value. Returns the count."""
    G = _Graph(model)
    count = 0
    for dq in [n for n in G.g.node if n.op_type == "DequantizeLinear"]:
        b = G.const(dq.input[0])
        if b is None or b.dtype != np.int32:
            continue
        scale = G.const(dq.input[1])
        zp = G.const(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros((), np.int32)
        axis = _attr(dq, "axis", 1) % max(1, b.ndim)
        value = ((b.astype(np.int64) - _broadcast(zp.astype(np.int64), b.ndim, axis)).astype(np.float32)
                 * _broadcast(scale.astype(np.float32), b.ndim, axis)).astype(np.float32)
        name = G.add_const(dq.output[0] + "_float", value)
        for user in G.consumers.get(dq.output[0], []):
            for k, i in enumerate(user.input):
                if i == dq.output[0]:
                    user.input[k] = name
        for o in G.g.output:
            if o.name == dq.output[0]:
                raise ValueError(f"quantized bias {dq.output[0]} is a graph output")
        G.g.node.remove(dq)
        count += 1
    _drop_unused_constants(model)
    return count


class UnrepresentableActivation(ValueError):
    """An activation quantizer has no exact signed-int8, zero-point-0 equivalent."""


def activations_to_signed_float_clip(model: onnx.ModelProto) -> dict:
    """Rewrite every activation ``Q(x) -> [Clip(int)] -> DQ`` chain to ``[Clip(float)] -> Q(int8, zp 0) -> DQ``.

    ``clamp(round(x/s), lo, hi) == round(clamp(x, lo*s, hi*s) / s)`` for a zero point of 0, so moving the integer
    Clip before QuantizeLinear as a float Clip computes the same values; an unsigned chain whose codes fit in
    ``[0, 127]`` (every activation of 7 bits or fewer) is the same chain in int8. Raises
    :class:`UnrepresentableActivation` for a non-zero zero point or unsigned codes above 127 (8-bit ``uint8``).
    """
    G = _Graph(model)
    moved = retyped = 0
    for q in [n for n in G.g.node if n.op_type == "QuantizeLinear"]:
        if G.is_const(q.input[0]):
            continue
        scale = G.const(q.input[1])
        zp = G.const(q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
        if scale is None or zp is None:
            continue
        where = q.name or q.output[0]
        if np.any(zp != 0):
            raise UnrepresentableActivation(f"activation quantizer {where} has zero point {zp.reshape(-1)[:4]} "
                                            "(TensorRT takes symmetric quantization only)")
        users = G.consumers.get(q.output[0], [])
        clips = [u for u in users if u.op_type == "Clip"]
        if len(clips) > 1 or any(u.op_type not in ("Clip", "DequantizeLinear") for u in users):
            raise UnrepresentableActivation(f"activation quantizer {where} feeds {[u.op_type for u in users]}, "
                                            "not a DequantizeLinear")
        lo, hi = _int_range(zp.dtype)
        dqs = [u for u in users if u.op_type == "DequantizeLinear"]
        if clips:
            clip = clips[0]
            lo, hi = int(G.const(clip.input[1])), int(G.const(clip.input[2]))
            dqs += G.consumers.get(clip.output[0], [])
        if hi > 127 or lo < -128:
            raise UnrepresentableActivation(f"activation quantizer {where} uses codes [{lo}, {hi}], which signed int8 "
                                            "at the same scale cannot hold")
        if clips:
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
                name = G.add_const("zero_point", np.zeros(zp.shape, np.int8))
                if len(node.input) > 2:
                    node.input[2] = name
                else:
                    node.input.append(name)
            retyped += 1
    _drop_unused_constants(model)
    return {"activation_clips_moved_to_float": moved, "unsigned_activations_to_int8": retyped}


# ops whose output is a subset of their input's values: a quantized input stays on the same grid
_GRID_PRESERVING = ("MaxPool",)
REQUANT_SUFFIX = "_requant_q"  # name suffix of the QuantizeLinear nodes added below (no PyTorch counterpart)


def requantize_grid_preserving_ops(model: onnx.ModelProto) -> int:
    """Repeat the input's ``Q -> [Clip] -> DQ`` after every MaxPool that reads a dequantized tensor.

    A max of values on a quantization grid is on the same grid, so the repeated chain changes no value; it gives
    the next layer (or both inputs of a residual Add) a DequantizeLinear to read, which TensorRT needs to run them
    in int8 and ONNX Runtime uses to fuse them. Returns the number of chains added.
    """
    G = _Graph(model)
    count = 0
    for n in [n for n in G.g.node if n.op_type in _GRID_PRESERVING]:
        dq = G.producer.get(n.input[0])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        users = G.consumers.get(n.output[0], [])
        if not users or all(u.op_type == "QuantizeLinear" for u in users):
            continue
        mid = G.producer.get(dq.input[0])
        clip = mid if mid is not None and mid.op_type == "Clip" else None
        q = G.producer.get(clip.input[0]) if clip is not None else mid
        if q is None or q.op_type != "QuantizeLinear":
            continue
        base = n.name or n.output[0]
        chain = [onnx.helper.make_node("QuantizeLinear", [n.output[0], *q.input[1:]], [G.fresh(n.output[0] + "_q")],
                                       name=base + REQUANT_SUFFIX)]
        chain[0].attribute.extend(q.attribute)
        if clip is not None:
            chain.append(onnx.helper.make_node("Clip", [chain[-1].output[0], *clip.input[1:]],
                                               [G.fresh(n.output[0] + "_clip")], name=base + "_requant_clip"))
        chain.append(onnx.helper.make_node("DequantizeLinear", [chain[-1].output[0], *dq.input[1:]],
                                           [G.fresh(n.output[0] + "_dq")], name=base + "_requant_dq"))
        chain[-1].attribute.extend(dq.attribute)
        for u in users:
            for k, i in enumerate(u.input):
                if i == n.output[0]:
                    u.input[k] = chain[-1].output[0]
        for o in G.g.output:
            if o.name == n.output[0]:
                raise ValueError(f"{base} output is a graph output")
        at = list(G.g.node).index(n) + 1
        for k, node in enumerate(chain):
            G.g.node.insert(at + k, node)
        count += 1
    return count
