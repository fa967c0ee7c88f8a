"""Graph rewrites both export profiles apply."""

from __future__ import annotations

import onnx

from ..errors import ExportError
from .graph import Graph

# ops whose output is a subset of their input's values: a quantized input stays on the same grid
_GRID_PRESERVING = ("MaxPool",)
# name suffix of the QuantizeLinear nodes that export passes add with no PyTorch counterpart (the requantizations
# below, and ort_passes.quantize_pool_outputs'): validate's layer-local check skips them
REQUANT_SUFFIX = "_requant_q"


def requantize_grid_preserving_ops(model: onnx.ModelProto) -> int:
    """Repeat the input's ``Q -> [Clip] -> DQ`` after every MaxPool that reads a dequantized tensor.

    A max of values on a quantization grid is on the same grid, so the repeated chain changes no value; it gives
    the next layer (or both inputs of a residual Add) a DequantizeLinear to read, which TensorRT needs to run them
    in int8 and ONNX Runtime uses to fuse them. Returns the number of chains added.
    """
    G = Graph(model)
    outputs = {o.name for o in G.g.output}
    for n in G.g.node:  # checked before anything changes
        if n.op_type in _GRID_PRESERVING and n.output[0] in outputs:
            raise ExportError(f"{n.name or n.output[0]} ({n.op_type}) output is a graph output: there is no next "
                              "layer to requantize for", hint="end the model with a Conv/Linear layer")
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
        at = list(G.g.node).index(n) + 1
        for k, node in enumerate(chain):
            G.g.node.insert(at + k, node)
        count += 1
    return count
