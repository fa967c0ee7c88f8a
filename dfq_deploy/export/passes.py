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

    def add_const(self, base: str, value: np.ndarray) -> str:
        """Add a fresh initializer (constants may be shared by several nodes, so never edit one in place)."""
        while True:
            self._counter += 1
            name = f"{base}__dfq{self._counter}"
            if name not in self._names:
                break
        self._names.add(name)
        t = numpy_helper.from_array(value, name)
        self.g.initializer.append(t)
        self.init[name] = t
        return name


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
