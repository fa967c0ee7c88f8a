"""The QDQ vocabulary of export/graph.py: chain walks, optional inputs, dequantized constants, rewiring."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dfq_deploy.export.graph import Graph, input_name


def _model(clip=True, extra_reader=None, weight_zp=True):
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "zp"),
             numpy_helper.from_array(np.array(-8, np.int8), "lo"),
             numpy_helper.from_array(np.array(7, np.int8), "hi"),
             numpy_helper.from_array(np.array([[3, -2]], np.int8), "w"),
             numpy_helper.from_array(np.array([0.25, 0.5], np.float32), "ws"),
             numpy_helper.from_array(np.array([1, 0], np.int8), "wzp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q")]
    codes = "q"
    if clip:
        nodes.append(helper.make_node("Clip", ["q", "lo", "hi"], ["qc"], name="clip"))
        codes = "qc"
    nodes.append(helper.make_node("DequantizeLinear", [codes, "s", "zp"], ["xd"], name="dq"))
    if extra_reader:
        nodes.append(helper.make_node(extra_reader, [codes], ["other"], name="other"))
    nodes.append(helper.make_node("DequantizeLinear", ["w", "ws"] + (["wzp"] if weight_zp else []), ["wd"],
                                  name="wdq", axis=1))
    nodes.append(helper.make_node("Add", ["xd", "wd"], ["y"], name="add"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_chain_walks_meet():
    G = Graph(_model())
    before = G.qdq_before("xd")
    after = G.qdq_after(G.producer["q"])
    assert before.q is after.q and before.clip is after.clip and before.dqs == after.dqs
    assert after.codes == "qc" and [n.name for n in after.nodes] == ["q", "clip", "dq"]
    assert G.qdq_before("wd") is None  # a weight has no QuantizeLinear
    assert G.dq_source(G.producer["wd"]) == (None, "w")
    assert Graph(_model(clip=False)).qdq_after(Graph(_model(clip=False)).producer["q"]).codes == "q"


def test_a_foreign_reader_breaks_the_chain_unless_it_is_a_followed_pad():
    G = Graph(_model(extra_reader="Relu"))
    assert G.qdq_after(G.producer["q"]) is None
    G = Graph(_model(extra_reader="Pad"))
    assert G.qdq_after(G.producer["q"]) is None
    chain = G.qdq_after(G.producer["q"], through_pad=True)
    assert [p.name for p in chain.pads] == ["other"] and [d.name for d in chain.dqs] == ["dq"]


def test_optional_inputs_and_dequantized_constants():
    G = Graph(_model(weight_zp=False))
    wdq = G.producer["wd"]
    assert input_name(wdq, 2) is None and input_name(wdq, 1) == "ws"
    assert G.const_input(wdq, 2) is None
    np.testing.assert_array_equal(G.const_input(wdq, 2, np.zeros((), np.int8)), 0)
    np.testing.assert_array_equal(G.dequantized(wdq, G.const("w")), [[0.75, -1.0]])
    G = Graph(_model())
    wdq = G.producer["wd"]
    np.testing.assert_array_equal(G.dequantized(wdq, G.const("w")), [[0.5, -1.0]])  # (3 - 1) * 0.25, (-2 - 0) * 0.5
    wdq.input[1] = "x"
    assert G.dequantized(wdq, G.const("w")) is None  # a scale that is not a constant


def test_rewire_moves_every_reader_and_the_index():
    G = Graph(_model())
    G.rewire("xd", "x")
    assert list(G.producer["y"].input) == ["x", "wd"]
    assert "xd" not in G.consumers and G.producer["y"] in G.consumers["x"]
    onnx.checker.check_model(G.model)
