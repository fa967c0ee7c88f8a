"""A small index over an ONNX graph, and the QDQ vocabulary every graph pass and reader shares.

A quantized tensor in a QCDQ export is a chain ``QuantizeLinear -> [Clip] -> DequantizeLinear``: the Q gives integer
codes, an optional integer Clip narrows them (Brevitas adds one below 8 bits), the DQ turns them back into floats. A
weight is the same chain without the Q: ``integer constant -> [Clip] -> DequantizeLinear``. :meth:`Graph.qdq_before`
walks a chain back from the float tensor, :meth:`Graph.qdq_after` forward from its Q, :meth:`Graph.dq_source` from a
DQ to its codes; :func:`input_name` and :meth:`Graph.const_input` read an optional input (a zero point or a Clip
bound may be left out, or named ``""``); :meth:`Graph.dequantized` is the float value a DQ gives constant codes;
:meth:`Graph.rewire` points every reader of one tensor at another.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx
from onnx import numpy_helper


class QDQ(NamedTuple):
    """One quantized tensor: ``q -> [clip] -> [pads] -> dqs`` (every DequantizeLinear that reads the codes)."""

    q: onnx.NodeProto
    clip: onnx.NodeProto | None
    dqs: list[onnx.NodeProto]
    pads: tuple[onnx.NodeProto, ...] = ()   # the onnxruntime profile's channel padding of the codes

    @property
    def nodes(self) -> list[onnx.NodeProto]:
        return [self.q, *([self.clip] if self.clip is not None else []), *self.pads, *self.dqs]

    @property
    def codes(self) -> str:
        """The integer tensor the DequantizeLinear nodes read (the Clip's output where there is one)."""
        return self.clip.output[0] if self.clip is not None else self.q.output[0]


def input_name(node: onnx.NodeProto, index: int) -> str | None:
    """``node``'s input ``index``, or None where the node leaves that optional input out."""
    return node.input[index] if len(node.input) > index and node.input[index] else None


class Graph:
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

    def const_input(self, node: onnx.NodeProto, index: int, default: np.ndarray | None = None) -> np.ndarray | None:
        """The constant value of ``node``'s optional input ``index``: ``default`` where the node leaves it out, None
        where it is not a constant."""
        name = input_name(node, index)
        return default if name is None else self.const(name)

    def produced_by(self, tensor: str, op_type: str) -> onnx.NodeProto | None:
        """The node that produces ``tensor`` when it is an ``op_type``, else None."""
        node = self.producer.get(tensor)
        return node if node is not None and node.op_type == op_type else None

    def dq_source(self, dq: onnx.NodeProto, through_pad: bool = False) -> tuple[onnx.NodeProto | None, str]:
        """``(Clip or None, codes)``: what DequantizeLinear ``dq`` reads, through an optional integer Clip (and, with
        ``through_pad``, through the onnxruntime profile's channel-padding Pads before it)."""
        src = dq.input[0]
        while through_pad and self.produced_by(src, "Pad") is not None:
            src = self.producer[src].input[0]
        clip = self.produced_by(src, "Clip")
        return clip, (clip.input[0] if clip is not None else src)

    def qdq_before(self, tensor: str) -> QDQ | None:
        """The chain whose DequantizeLinear produces ``tensor`` (``dqs`` holds that one DQ), else None."""
        dq = self.produced_by(tensor, "DequantizeLinear")
        if dq is None:
            return None
        clip, src = self.dq_source(dq)
        q = self.produced_by(src, "QuantizeLinear")
        return QDQ(q, clip, [dq]) if q is not None else None

    def qdq_after(self, q: onnx.NodeProto, through_pad: bool = False) -> QDQ | None:
        """The chain that QuantizeLinear ``q`` starts, when only DequantizeLinear nodes read its codes (directly, or
        through one Clip that only they read; with ``through_pad`` also through Pads that only they read), else
        None. ``dqs`` may be empty (nothing reads it); those reading the codes directly come first."""
        readers = ("DequantizeLinear", "Pad") if through_pad else ("DequantizeLinear",)
        users = self.consumers.get(q.output[0], [])
        clips = [u for u in users if u.op_type == "Clip"]
        if len(clips) > 1 or any(u.op_type not in ("Clip", *readers) for u in users):
            return None
        users = [u for u in users if u.op_type != "Clip"] + (self.consumers.get(clips[0].output[0], []) if clips
                                                             else [])
        if any(u.op_type not in readers for u in users):
            return None
        dqs = [u for u in users if u.op_type == "DequantizeLinear"]
        pads = tuple(u for u in users if u.op_type == "Pad")
        for pad in pads:
            after = self.consumers.get(pad.output[0], [])
            if any(u.op_type != "DequantizeLinear" for u in after):
                return None
            dqs += after
        return QDQ(q, clips[0] if clips else None, dqs, pads)

    def dequantized(self, dq: onnx.NodeProto, codes: np.ndarray) -> np.ndarray | None:
        """The float32 value DequantizeLinear ``dq`` gives the constant ``codes`` (None: its scale or zero point is
        not a constant). Integers are subtracted in 64 bits, so an int32 bias is as exact as an int8 weight."""
        scale = self.const(dq.input[1])
        zp = self.const_input(dq, 2, np.zeros((), codes.dtype))
        if scale is None or zp is None:
            return None
        axis = attr(dq, "axis", 1) % max(1, codes.ndim)
        return ((codes.astype(np.int64) - broadcast(zp.astype(np.int64), codes.ndim, axis)).astype(np.float32)
                * broadcast(scale.astype(np.float32), codes.ndim, axis)).astype(np.float32)

    def rewire(self, old: str, new: str) -> None:
        """Make every node that reads tensor ``old`` read ``new`` instead (the index follows)."""
        users = self.consumers.pop(old, [])
        for user in users:
            for k, name in enumerate(user.input):
                if name == old:
                    user.input[k] = new
        self.consumers.setdefault(new, []).extend(users)

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


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def broadcast(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis] = v.size
    return v.reshape(shape)


def int_range(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def set_input(node: onnx.NodeProto, index: int, name: str) -> None:
    """Set ``node``'s input ``index`` to ``name``, appending it where the node leaves that optional input out."""
    while len(node.input) < index:
        node.input.append("")
    if len(node.input) > index:
        node.input[index] = name
    else:
        node.input.append(name)


def drop_unused_constants(model: onnx.ModelProto) -> None:
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
