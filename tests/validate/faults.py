"""Plant a real fault in an exported graph (shared by the divergence and validate tests)."""

import numpy as np
import onnx
from onnx import numpy_helper

from dfq_deploy.validate.divergence import _activation_dq_nodes


def plant_scale_error(onnx_path, pick=lambda n: n // 2, factor=1.3) -> str:
    """Multiply the scale of one activation Q/DQ pair by ``factor`` (as a fresh initializer, so nothing shared
    changes) and save the graph in place. ``pick(count)`` chooses which activation. Returns the DQ's name."""
    model = onnx.load(str(onnx_path))
    dqs = _activation_dq_nodes(model)
    victim = dqs[pick(len(dqs))]
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    old = victim.input[1]
    value = numpy_helper.to_array(inits[old]) if old in inits else numpy_helper.to_array(consts[old].attribute[0].t)
    model.graph.initializer.append(numpy_helper.from_array((value * np.float32(factor)).astype(np.float32),
                                                           "planted_scale"))
    node = producer[victim.input[0]]
    while node.op_type != "QuantizeLinear":
        node = producer[node.input[0]]
    node.input[1] = victim.input[1] = "planted_scale"
    onnx.save(model, str(onnx_path))
    return victim.name
