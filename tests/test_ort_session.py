"""The one ONNX Runtime session factory: optimisation level, threads, log level, any kind of model source."""

import numpy as np
import onnx
from onnx import TensorProto, helper

from dfq_deploy.ort_session import LOG_SEVERITY, ort_session


def _relu_model() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_model_bytes_and_path_give_the_same_session(tmp_path):
    model = _relu_model()
    onnx.save(model, tmp_path / "m.onnx")
    x = np.array([[-1.0, 0.0, 2.0]], np.float32)
    for source in (model, model.SerializeToString(), tmp_path / "m.onnx", str(tmp_path / "m.onnx")):
        np.testing.assert_array_equal(ort_session(source).run(None, {"x": x})[0], [[0.0, 0.0, 2.0]])


def test_options_are_set_in_one_place(tmp_path):
    import onnxruntime as ort

    sess = ort_session(_relu_model(), optimize=False, threads=2)
    so = sess.get_session_options()
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert so.intra_op_num_threads == 2 and so.log_severity_level == LOG_SEVERITY
    assert ort_session(_relu_model()).get_session_options().graph_optimization_level == \
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opt = tmp_path / "opt.onnx"
    ort_session(_relu_model(), optimized_model_path=str(opt))
    assert opt.is_file()
