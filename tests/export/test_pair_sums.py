"""The static 16-bit pair-sum bound: exact where no two products can pass int16, flagged where they can."""

import numpy as np
import onnx
import pytest
import torch

from dfq_deploy.export import export_onnx
from dfq_deploy.export.pair_sums import check_pair_sums, worst_pair_sum
from dfq_deploy.isa import PAIR_SUM_LIMIT
from dfq_deploy.quant import QuantScheme, calibrate, quantize_model
from dfq_deploy.quant.scheme import portable_weight_bits


def test_worst_pair_sum_takes_the_two_largest_products_of_one_row():
    rows = np.array([[127, 100, -5, 3], [-127, -128, 1, 0]])
    hi, lo = worst_pair_sum(rows, 0, 255)
    assert hi == 255 * 227            # row 0: the two largest positive weights at the top code
    assert lo == -255 * 255           # row 1: the two most negative
    hi, lo = worst_pair_sum(rows, 128, 255)  # a code floor above 0: a negative weight's product is at least -128 * w
    assert lo == -255 * 255 and hi == 255 * 227
    assert worst_pair_sum(np.array([[-3, -4]]), 10, 20) == (-30 - 40, -60 - 80)
    assert worst_pair_sum(np.array([[9], [-2]]), 0, 10) == (90, -20)  # one product pairs with padding


@pytest.mark.parametrize("input_bits, expected", [(8, 7), (7, 8), (4, 8), (2, 8)])
def test_portable_weight_bits_are_the_largest_that_fit(input_bits, expected):
    bits = portable_weight_bits(8, input_bits)
    assert bits == expected
    high = 2 ** input_bits - 1
    assert 2 * high * (2 ** (bits - 1) - 1) <= PAIR_SUM_LIMIT
    assert bits == 8 or 2 * high * (2 ** bits - 1) > PAIR_SUM_LIMIT  # one more bit would not fit
    assert portable_weight_bits(4, 8) == 4


def _export(tmp_path, tag, portable, name=None):
    from dfq_deploy.models import SHIPPED_TEACHER, load_teacher

    teacher, card = load_teacher(SHIPPED_TEACHER)
    q = quantize_model(teacher, QuantScheme.from_tag(tag, portable=portable))
    torch.manual_seed(0)
    calibrate(q, [torch.randn(32, *card.input_shape)])
    path = tmp_path / (name or f"{tag}_{portable}.onnx")
    export_onnx(q, path, tuple(card.input_shape), portable=portable)
    return path


@pytest.mark.parametrize("tag, flagged", [("W8A8", 22), ("W4A4", 2)])
def test_full_8bit_weights_after_8bit_inputs_are_flagged_and_the_portable_scheme_is_not(tmp_path, tag, flagged):
    planted = check_pair_sums(onnx.load(_export(tmp_path, tag, portable=False)))
    assert not planted and len(planted.saturating) == flagged  # W4A4: the first conv and the classifier
    assert planted.to_dict()["worst_pair_sum"] > PAIR_SUM_LIMIT
    portable = check_pair_sums(onnx.load(_export(tmp_path, tag, portable=True)))
    assert portable and len(portable.layers) == 22
    assert all(layer.weights == "int8" and abs(layer.worst_pair_sum) <= PAIR_SUM_LIMIT for layer in portable.layers)
    eight_bit_inputs = [layer for layer in portable.layers if layer.input_codes == [0, 255]]
    assert len(eight_bit_inputs) == (22 if tag == "W8A8" else 2)  # W4A4: the first conv and the classifier
    assert all(max(map(abs, layer.weight_codes)) == 63 for layer in eight_bit_inputs)  # 7-bit weights


def test_the_safety_net_stores_saturating_weights_as_uint8_and_keeps_the_function(tmp_path):
    """A model trained with full 8-bit weights after 8-bit inputs, exported as portable: the onnxruntime profile
    stores those layers' weights as uint8 codes with zero point 128; the graph is then exact without VNNI and
    computes the same logits as the int8 form."""
    import onnxruntime as ort

    from dfq_deploy.models import SHIPPED_TEACHER, load_teacher

    teacher, card = load_teacher(SHIPPED_TEACHER)
    q = quantize_model(teacher, QuantScheme.from_tag("W4A4", portable=False))
    torch.manual_seed(0)
    calibrate(q, [torch.randn(32, *card.input_shape)])
    paths = {p: tmp_path / f"{p}.onnx" for p in (False, True)}
    for portable, path in paths.items():
        res = export_onnx(q, path, tuple(card.input_shape), portable=portable)
        assert res.passes["weights_moved_to_uint8"] == (2 if portable else 0)
    check = check_pair_sums(onnx.load(paths[True]))
    assert check and [layer.weights for layer in check.layers].count("uint8") == 2
    assert [layer.node for layer in check.layers if layer.weights == "uint8"] == \
        [layer.node for layer in check_pair_sums(onnx.load(paths[False])).saturating]
    x = np.random.default_rng(0).standard_normal((16, *card.input_shape)).astype(np.float32)
    so = ort.SessionOptions()  # the graphs' own semantics (no integer kernel: the int8 form saturates without VNNI)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    outs = [ort.InferenceSession(str(paths[p]), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for p in (False, True)]
    np.testing.assert_array_equal(outs[0], outs[1])


def test_signed_sub_8bit_activations_start_at_code_0(tmp_path):
    """The onnxruntime profile moves an int8 activation to uint8 by the Clip's floor, so a 4-bit signed activation
    is codes [0, 15], not [120, 135]: the range a layer after it multiplies stays small."""
    from dfq_deploy.export.graph import Graph
    from dfq_deploy.export.pair_sums import _activation_codes

    m = onnx.load(_export(tmp_path, "W4A4", portable=True))
    G = Graph(m)
    inputs = [t for n in G.g.node if n.op_type in ("Conv", "Gemm", "Add")
              for t in (n.input[:2] if n.op_type == "Add" else n.input[:1])]
    ranges = {_activation_codes(G, t) for t in inputs} - {None}
    assert (0, 15) in ranges and (0, 255) in ranges  # 4-bit activations and the 8-bit image and pooled features
    assert all(lo == 0 for lo, _ in ranges)
