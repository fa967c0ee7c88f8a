import brevitas.nn as qnn
import pytest
import torch

from dfq_deploy.errors import ConfigError
from dfq_deploy.quant import QuantScheme, calibrate, quantize_model


def _weight_bits(q):
    return {n: int(m.quant_weight().bit_width.item()) for n, m in q.named_modules()
            if isinstance(m, (qnn.QuantConv2d, qnn.QuantLinear))}


def test_scheme_tags():
    assert QuantScheme.from_tag("w4a4").tag == "W4A4"
    assert QuantScheme.from_tag("3") == QuantScheme(3, 3)
    assert QuantScheme.from_tag("W8A4").act_bits == 4
    for bad in ("W9A4", "x", "W1A1"):
        with pytest.raises(ConfigError):
            QuantScheme.from_tag(bad)


@pytest.mark.parametrize("portable", [True, False])
def test_bits_per_layer_and_bn_merged(tiny_teacher, portable):
    q = quantize_model(tiny_teacher, QuantScheme(3, 4, first_last_bits=8, portable=portable))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in q.modules())  # BN lives in the convs
    bits = _weight_bits(q)
    edge = 7 if portable else 8  # 8-bit inputs: 7-bit weights keep every 16-bit pair sum in range
    assert bits.pop("conv1") == edge and bits.pop("fc") == edge
    assert set(bits.values()) == {3}
    acts = {n: int(m.act_quant.bit_width().item()) for n, m in q.named_children()
            if isinstance(m, (qnn.QuantIdentity, qnn.QuantReLU))}
    assert acts["x_quant"] == 8 and acts["fc_input_quant"] == 8 and acts["fc_output_quant"] == 8
    inner = {k: v for k, v in acts.items() if k not in ("x_quant", "fc_input_quant", "fc_output_quant")}
    assert inner and set(inner.values()) == {4}


def test_float_model_is_untouched(tiny_teacher):
    before = {k: v.clone() for k, v in tiny_teacher.state_dict().items()}
    quantize_model(tiny_teacher, QuantScheme(4, 4))
    assert all(torch.equal(before[k], v) for k, v in tiny_teacher.state_dict().items())


def test_w8a8_tracks_float_after_calibration(tiny_teacher):
    torch.manual_seed(1)
    q = quantize_model(tiny_teacher, QuantScheme(8, 8))
    calibrate(q, [torch.randn(64, 1, 28, 28) for _ in range(3)])
    x = torch.randn(256, 1, 28, 28)
    with torch.no_grad():
        ref, out = tiny_teacher(x), q.eval()(x)
    assert (ref.argmax(1) == out.argmax(1)).float().mean() > 0.9
    q2 = quantize_model(tiny_teacher, QuantScheme(2, 2))
    calibrate(q2, [torch.randn(64, 1, 28, 28) for _ in range(3)])
    with torch.no_grad():
        err8 = (q(x) - ref).abs().mean()
        err2 = (q2.eval()(x) - ref).abs().mean()
    assert err8 < err2  # more bits, closer to float


def test_torchvision_mobilenet_quantizes(tmp_path):
    from dfq_deploy.models import build_model

    m = build_model("torchvision:mobilenet_v2", num_classes=4, width_mult=0.25).eval()
    q = quantize_model(m, QuantScheme(4, 4))
    calibrate(q, [torch.randn(2, 3, 32, 32)])
    assert q.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("portable, expected", [(True, {7}), (False, {8})])
def test_w8a8_weights_are_7_bit_after_8_bit_inputs_when_portable(tiny_teacher, portable, expected):
    q = quantize_model(tiny_teacher, QuantScheme(8, 8, portable=portable))
    assert set(_weight_bits(q).values()) == expected


@pytest.mark.parametrize("value", [1, "yes", None])
def test_portable_must_be_a_bool(value):
    with pytest.raises(ConfigError):
        QuantScheme(portable=value)


def test_calibration_that_gives_a_non_finite_step_size_is_a_training_error(tiny_teacher):
    from dfq_deploy.errors import TrainingError

    q = quantize_model(tiny_teacher, QuantScheme.from_tag("W4A4"))
    calibrate(q, [torch.randn(8, 1, 28, 28)])  # finite images: no error
    bad = torch.randn(8, 1, 28, 28)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingError) as e:
        calibrate(quantize_model(tiny_teacher, QuantScheme.from_tag("W4A4")), [bad])
    assert "non-finite step size" in str(e.value)
