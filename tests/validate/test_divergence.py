"""The first-divergence search names a planted fault and stays quiet on a clean export."""

import shutil

import numpy as np
import onnx
import pytest
import torch

from dfq_deploy.errors import ModelError
from dfq_deploy.export import export_onnx
from dfq_deploy.quant import QuantScheme, calibrate, quantize_model
from dfq_deploy.validate.divergence import _activation_dq_nodes, first_divergence, layer_diffs

from .faults import plant_scale_error


@pytest.fixture(scope="module")
def student_and_export(tmp_path_factory):
    from dfq_deploy.models import build_model

    torch.manual_seed(0)
    q = quantize_model(build_model("resnet8", width=8).eval(), QuantScheme(4, 4))
    calibrate(q, [torch.randn(64, 1, 28, 28)])
    path = tmp_path_factory.mktemp("div") / "m.onnx"
    export_onnx(q.eval(), path, (1, 28, 28))
    return q, path


def _x():
    return np.random.default_rng(0).standard_normal((32, 1, 28, 28)).astype(np.float32)


def test_clean_export_has_no_divergence(student_and_export):
    q, path = student_and_export
    diffs = layer_diffs(q, path, _x())
    assert len(diffs) == len(_activation_dq_nodes(onnx.load(str(path)))) > 5
    assert first_divergence(diffs) is None
    assert max(d.max_steps for d in diffs) <= 1.001


def test_a_perturbed_scale_is_named_as_the_first_divergence(student_and_export, tmp_path):
    q, path = student_and_export
    bad = tmp_path / "bad.onnx"
    shutil.copy(path, bad)
    victim = plant_scale_error(bad)  # one activation's Q/DQ scale 30 % larger
    first = first_divergence(layer_diffs(q, bad, _x()))
    assert first is not None and first.node == victim and first.max_steps > 1


def test_a_graph_of_another_model_is_refused(student_and_export, tmp_path):
    from dfq_deploy.models import build_model

    _, path = student_and_export
    other = quantize_model(build_model("resnet20", width=4).eval(), QuantScheme(4, 4))
    calibrate(other, [torch.randn(8, 1, 28, 28)])
    with pytest.raises(ModelError, match="quantized activations"):
        layer_diffs(other, path, _x())
