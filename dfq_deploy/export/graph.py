"""A small index over an ONNX graph, and the helpers every graph pass and reader shares."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


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
