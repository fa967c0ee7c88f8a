"""Graph rewrites both export profiles apply."""

from __future__ import annotations

import onnx

from ..errors import ExportError
from .graph import QDQ, Graph

# ops whose output holds only values of their inputs: quantized inputs on one grid leave the output on that grid. For
# each, the positions of its data inputs (None: all of them); the others are shapes, axes or split sizes
_GRID_PRESERVING = {"MaxPool": (0,), "Concat": None, "Reshape": (0,), "Transpose": (0,), "Flatten": (0,),
                    "Squeeze": (0,), "Unsqueeze": (0,)}
# name suffix of the QuantizeLinear nodes that export passes add with no PyTorch counterpart (the requantizations
# below, and ort_passes.quantize_pool_outputs'): validate's layer-local check skips them
REQUANT_SUFFIX = "_requant_q"


def _grid(G: Graph, chain: QDQ) -> tuple | None:
    """The values that define a chain's grid (scale, zero point, Clip bounds, axis), comparable across chains."""
    clip, (dq,) = chain.clip, chain.dqs
    parts = [G.const(name) for name in (*dq.input[1:3], *(clip.input[1:3] if clip is not None else ()))]
    if any(p is None for p in parts):
        return None
    return tuple((p.dtype.str, p.shape, p.tobytes()) for p in parts) + (
        tuple((a.name, a.i) for a in dq.attribute), clip is not None)


def requantize_grid_preserving_ops(model: onnx.ModelProto) -> int:
    """Repeat the input's ``Q -> [Clip] -> DQ`` after every grid-preserving op (MaxPool; Concat, Reshape, Transpose
    and the like) whose data inputs are all dequantized on one grid (same scale, zero point and Clip bounds: Brevitas
    aligns a concatenation's inputs) and whose output a layer reads.

    A max of values on a quantization grid, or a rearrangement of them, is on the same grid, so the repeated chain
    changes no value; it gives the next layer (or both inputs of a residual Add) a DequantizeLinear to read, which
    TensorRT needs to run them in int8 and ONNX Runtime to fuse them into integer kernels (without it a convolution
    after an Inception block's concatenation runs in float). Ops are visited in graph order, so a chain of them
    (concatenate, then max-pool) is requantized after each. Returns the number of chains added.
    """
    G = Graph(model)
    outputs = {o.name for o in G.g.output}
    for n in G.g.node:  # checked before anything changes
        if n.op_type == "MaxPool" and n.output[0] in outputs:
            raise ExportError(f"{n.name or n.output[0]} ({n.op_type}) output is a graph output: there is no next "
                              "layer to requantize for", hint="end the model with a Conv/Linear layer")
    count = 0
    for n in [n for n in G.g.node if n.op_type in _GRID_PRESERVING]:
        if len(n.output) != 1 or n.output[0] in outputs:
            continue
        positions = _GRID_PRESERVING[n.op_type]
        data = [n.input[i] for i in (positions if positions is not None else range(len(n.input))) if n.input[i]]
        chains = [G.qdq_before(t) for t in data]
        if not chains or any(c is None for c in chains):
            continue
        grids = {_grid(G, c) for c in chains}
        if len(grids) != 1 or None in grids:
            continue
        users = G.consumers.get(n.output[0], [])
        if not users or all(u.op_type == "QuantizeLinear" for u in users):
            continue
        q, clip, (dq,) = chains[0].q, chains[0].clip, chains[0].dqs
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
        G.rewire(n.output[0], chain[-1].output[0])
        at = list(G.g.node).index(n) + 1
        for k, node in enumerate(chain):
            G.g.node.insert(at + k, node)
            G.producer[node.output[0]] = node
            for i in node.input:
                G.consumers.setdefault(i, []).append(node)
        G.consumers[n.output[0]] = [chain[0]]
        count += 1
    return count
