"""Plant a real fault in an exported graph (shared by the gate and validate tests).

Each function edits the graph at ``onnx_path`` in place (fresh initializers, so nothing shared changes) and returns
the name of the activation DequantizeLinear whose values the fault first makes wrong: what the gate must name.
"""

import numpy as np
import onnx

from dfq_deploy.export.graph import Graph
from dfq_deploy.validate.local import activation_chains


def _chain_after(G: Graph, tensor: str) -> str:
    """The activation DQ of the first QuantizeLinear downstream of ``tensor`` (through Relu/Clip/Add...)."""
    chains = {c.q.name: c for c in activation_chains(G.model)}
    frontier = [tensor]
    while frontier:
        t = frontier.pop(0)
        for n in G.consumers.get(t, []):
            if n.op_type == "QuantizeLinear" and n.name in chains:
                return chains[n.name].name
            frontier.extend(n.output)
    raise AssertionError(f"no activation quantizer after {tensor}")


def _fresh(G: Graph, value: np.ndarray, base: str) -> str:
    return G.add_const(base, value)


def plant_scale_error(onnx_path, pick=lambda n: n // 2, factor=1.3) -> str:
    """One activation's Q/DQ scale ``factor`` times too large."""
    model = onnx.load(str(onnx_path))
    G = Graph(model)
    chains = activation_chains(model)
    victim = chains[pick(len(chains))]
    name = _fresh(G, (victim.q_scale * np.float32(factor)).astype(np.float32), "planted_scale")
    victim.q.input[1] = victim.dq.input[1] = name
    onnx.save(model, str(onnx_path))
    return victim.name


def plant_zero_point_error(onnx_path, pick=lambda n: n // 2) -> str:
    """One activation's DequantizeLinear zero point off by one."""
    model = onnx.load(str(onnx_path))
    G = Graph(model)
    chains = activation_chains(model)
    victim = chains[pick(len(chains))]
    zp = victim.dq_zero.astype(np.int64) + 1
    name = _fresh(G, zp.astype(victim.dq_zero.dtype), "planted_zero_point")
    while len(victim.dq.input) < 3:
        victim.dq.input.append("")
    victim.dq.input[2] = name
    onnx.save(model, str(onnx_path))
    return victim.name


def plant_missing_clip(onnx_path, pick=lambda n: n // 2) -> str:
    """One low-bit activation's Clip removed: codes above the bit width's range reach the next layer."""
    model = onnx.load(str(onnx_path))
    chains = [c for c in activation_chains(model) if c.codes != c.q.output[0]]
    assert chains, "no clipped activation in this graph"
    victim = chains[pick(len(chains))]
    clip = next(n for n in model.graph.node if victim.codes in n.output)
    for n in model.graph.node:
        for k, i in enumerate(n.input):
            if i == victim.codes:
                n.input[k] = victim.q.output[0]
    model.graph.node.remove(clip)
    onnx.save(model, str(onnx_path))
    return victim.name


def plant_missing_relu(onnx_path, pick=lambda n: n // 2) -> str:
    """One Relu removed (its input goes straight on): negative values survive where the model clamps them."""
    model = onnx.load(str(onnx_path))
    G = Graph(model)
    relus = [n for n in model.graph.node if n.op_type == "Relu"]
    victim = relus[pick(len(relus))]
    expected = _chain_after(G, victim.output[0])
    for n in model.graph.node:
        for k, i in enumerate(n.input):
            if i == victim.output[0]:
                n.input[k] = victim.input[0]
    model.graph.node.remove(victim)
    onnx.save(model, str(onnx_path))
    return expected


def _weight_dq(G: Graph, conv: onnx.NodeProto) -> onnx.NodeProto:
    dq = G.producer[conv.input[1]]
    assert dq.op_type == "DequantizeLinear", dq.op_type
    return dq


def plant_swapped_channel_scales(onnx_path, pick=lambda n: n // 2) -> str:
    """Two output channels' weight scales of one convolution swapped (the two most different ones)."""
    model = onnx.load(str(onnx_path))
    G = Graph(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    conv = convs[pick(len(convs))]
    dq = _weight_dq(G, conv)
    scale = G.const(dq.input[1]).copy()
    assert scale.size > 1, "per-channel weight scales expected"
    a, b = int(scale.argmin()), int(scale.argmax())
    scale[[a, b]] = scale[[b, a]]
    dq.input[1] = _fresh(G, scale, "planted_weight_scale")
    onnx.save(model, str(onnx_path))
    return _chain_after(G, conv.output[0])


def plant_wrong_add_scale(onnx_path, pick=lambda n: n // 2, factor=1.25) -> str:
    """One residual Add reads one of its inputs through a DequantizeLinear whose scale is ``factor`` off."""
    model = onnx.load(str(onnx_path))
    G = Graph(model)
    adds = [n for n in model.graph.node if n.op_type == "Add" and not any(G.is_const(i) for i in n.input)]
    add = adds[pick(len(adds))]
    dq = G.producer[add.input[1]]
    assert dq.op_type == "DequantizeLinear", dq.op_type
    wrong = onnx.helper.make_node("DequantizeLinear",
                                  [dq.input[0], _fresh(G, (G.const(dq.input[1]) * np.float32(factor))
                                                       .astype(np.float32), "planted_add_scale"), *dq.input[2:]],
                                  [G.fresh("planted_add_input")], name="planted_add_dq")
    add.input[1] = wrong.output[0]
    model.graph.node.insert(list(model.graph.node).index(add), wrong)
    onnx.save(model, str(onnx_path))
    return _chain_after(G, add.output[0])


def plant_float_conv(onnx_path, pick=lambda n: n // 2) -> str:
    """One convolution's weight Q/DQ replaced by its float values: the same function, but a float kernel.
    Returns the Conv's name (what the integer census must report)."""
    model = onnx.load(str(onnx_path))
    G = Graph(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    conv = convs[pick(len(convs))]
    dq = _weight_dq(G, conv)
    src = dq.input[0]
    codes = G.const(src)
    if codes is None:  # QCDQ: the codes come through a Clip of constants
        codes = G.const(G.producer[src].input[0])
    scale = G.const(dq.input[1])
    zero = G.const(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros((), codes.dtype)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    shape = [1] * codes.ndim
    shape[axis] = -1
    w = ((codes.astype(np.float32) - zero.astype(np.float32).reshape(shape if zero.size > 1 else ()))
         * scale.reshape(shape if scale.size > 1 else ()))
    conv.input[1] = _fresh(G, w.astype(np.float32), "planted_float_weight")
    onnx.save(model, str(onnx_path))
    return conv.name
