"""Paths inside an ONNX file are untrusted: external data must sit beside the model."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dfq_deploy.errors import ModelError
from dfq_deploy.export.load import load_onnx_safely


def _model_with_external(tmp_path, location):
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    m = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    for entry in m.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(m, str(tmp_path / "m.onnx"))
    return tmp_path / "m.onnx"


def test_external_data_beside_the_model_loads(tmp_path):
    m = load_onnx_safely(_model_with_external(tmp_path, "weights.bin"))
    assert numpy_helper.to_array(m.graph.initializer[0]).sum() == 4


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../outside.bin", "missing.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    (tmp_path / "outside.bin").write_bytes(b"\0" * 16)
    inner = tmp_path / "model"
    inner.mkdir()
    with pytest.raises(ModelError, match="outside the model's folder"):
        load_onnx_safely(_model_with_external(inner, location))


def test_non_onnx_bytes_are_a_clear_error(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        load_onnx_safely(tmp_path / "x.onnx")
    with pytest.raises(ModelError, match="not found"):
        load_onnx_safely(tmp_path / "nope.onnx")
