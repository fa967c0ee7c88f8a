"""Layer patterns of users' own models (torchvision's MobileNetV3, ShuffleNetV2, DenseNet, vision transformers): the
student must compute what its export computes, or be refused by name."""

import pytest
import torch
from torch import nn

from dfq_deploy.errors import ModelError
from dfq_deploy.quant import QuantScheme, calibrate, quantize_model


def _on_grid(t) -> bool:
    value, scale = t.value, t.scale
    codes = value / scale
    return bool(torch.allclose(codes, codes.round(), atol=1e-3))


class _HardswishStem(nn.Module):
    """MobileNetV3's stem: conv, BN, in-place Hardswish, then a convolution."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.Hardswish(inplace=True)
        self.conv2 = nn.Conv2d(8, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.pool(self.conv2(self.act(self.bn(self.conv(x))))).flatten(1))


def test_in_place_activations_do_not_overwrite_a_quantizer_output():
    """An in-place Hardswish after a quantizer rewrote the quantizer's output: what the parity check and the block
    reconstruction read was no longer on its grid (the exported graph cannot write in place)."""
    torch.manual_seed(0)
    model = _HardswishStem().eval()
    student = quantize_model(model, QuantScheme())
    assert model.act.inplace  # the user's model is untouched
    assert not any(getattr(m, "inplace", False) for m in student.modules())
    calibrate(student, [torch.randn(8, 3, 8, 8)])
    seen = []
    for m in student.modules():
        if type(m).__name__ == "QuantIdentity":
            m.register_forward_hook(lambda mod, i, out: seen.append(out))
    with torch.no_grad():
        student(torch.randn(4, 3, 8, 8))
    quantized = [t for t in seen if hasattr(t, "scale")]  # the logits' quantizer returns a plain tensor
    assert quantized and all(_on_grid(t) for t in quantized)


class _ChannelSplit(nn.Module):
    """ShuffleNetV2's unit: split the channels with ``Tensor.chunk``, convolve one half, concatenate."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.branch = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        a, b = self.relu(self.conv(x)).chunk(2, dim=1)
        y = torch.cat([a, self.branch(b)], dim=1)
        return self.fc(y.mean((2, 3)))


def test_tensor_methods_quant_tensors_lack_run_on_their_values():
    torch.manual_seed(0)
    model = _ChannelSplit().eval()
    student = quantize_model(model, QuantScheme(weight_bits=8, act_bits=8))
    calibrate(student, [torch.randn(8, 3, 8, 8)])
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        out = student(x)
        ref = model(x)
    assert out.shape == (4, 10)
    assert torch.corrcoef(torch.stack([out.flatten(), ref.flatten()]))[0, 1] > 0.95


class _DenseJoin(nn.Module):
    """DenseNet's join: a ReLU output concatenated with a later convolution's output, so Brevitas gives both one
    shared quantizer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.grow = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        r = self.relu(self.conv(x))
        y = torch.cat([r, self.grow(r)], dim=1)
        return self.fc(self.head(y).mean((2, 3)))


def test_a_shared_quantizer_quantizes_after_calibration():
    """Brevitas' calibration_mode restored a quantizer shared by two modules from the second module's record and
    left it observing: the student passed that activation through unquantized while its export quantized it."""
    torch.manual_seed(0)
    student = quantize_model(_DenseJoin().eval(), QuantScheme())
    tensor_quants = [m.act_quant.fused_activation_quant_proxy.tensor_quant for m in student.modules()
                     if type(m).__name__ in ("QuantReLU", "QuantIdentity")]
    assert len({id(t) for t in tensor_quants}) < len(tensor_quants)  # the pattern under test: one is shared
    calibrate(student, [torch.randn(8, 3, 8, 8)])
    assert not any(m.observer_only for m in student.modules() if hasattr(m, "observer_only"))
    seen = []
    student.get_submodule("relu").register_forward_hook(lambda mod, i, out: seen.append(out))
    with torch.no_grad():
        student(torch.randn(4, 3, 8, 8))
    assert _on_grid(seen[0])


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        t = self.proj(x.flatten(2).transpose(1, 2))
        attn = torch.softmax(torch.matmul(t, t.transpose(1, 2)), dim=-1)
        return self.fc(torch.matmul(attn, t).mean(1))


def test_attention_is_refused_by_name():
    with pytest.raises(ModelError, match="multiplies activations") as e:
        quantize_model(_Attention().eval(), QuantScheme())
    assert "matmul" in str(e.value) and e.value.hint


class _ShuffleThenAdd(nn.Module):
    """A concatenation, shuffled (view/transpose/reshape), then added to a branch of itself: Brevitas' search for
    one grid per join does not settle on this graph."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.relu_a, self.relu_b = nn.ReLU(), nn.ReLU()
        self.mix = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = torch.cat([self.relu_a(self.a(x)), self.relu_b(self.b(x))], 1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.fc((y + self.mix(y)).mean((2, 3)))


def test_joins_brevitas_cannot_align_are_refused_by_name_within_a_bounded_search(monkeypatch):
    from brevitas.graph import quantize_impl

    rounds = []
    original = quantize_impl.recursive_input_handler
    monkeypatch.setattr(quantize_impl, "recursive_input_handler",
                        lambda *a, **k: rounds.append(1) or original(*a, **k))
    with pytest.raises(ModelError, match="channel shuffle before an add"):
        quantize_model(_ShuffleThenAdd().eval(), QuantScheme())
    assert len(rounds) < 1000  # Brevitas alone searches 9999 rounds, each rebuilding the graph
    assert quantize_impl.MAX_RESIDUAL_ITERS == 9999  # its own bound is put back
