import pytest
import torch

from dfq_deploy.config import config_from_dict
from dfq_deploy.errors import ConfigError
from dfq_deploy.quant import QuantScheme, calibrate, quantize_model
from dfq_deploy.recipes import DFQFConfig, train_dfqf
from dfq_deploy.recipes.dfqf import _DFQFObjective
from dfq_deploy.synthesis import ConditionalGenerator


def test_config_validation():
    assert config_from_dict(DFQFConfig, {"adv_weight": 0.5}).adv_weight == 0.5
    with pytest.raises(ConfigError):
        config_from_dict(DFQFConfig, {"is_weight": -1})


def _gen_grads(teacher, student, adv_weight):
    torch.manual_seed(0)
    gen = ConditionalGenerator(10, (1, 28, 28), 16, width=16)
    imgs, _, y = gen.sample(16, torch.Generator().manual_seed(0))
    cfg = DFQFConfig(adv_weight=adv_weight)
    loss, m = _DFQFObjective(cfg).generator_loss(imgs, y, teacher(imgs), torch.zeros(()), student, cfg)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in gen.parameters() if p.grad is not None]), m


def test_adversarial_term_reaches_the_generator(tiny_teacher):
    for p in tiny_teacher.parameters():
        p.requires_grad_(False)
    student = quantize_model(tiny_teacher, QuantScheme(2, 2))
    calibrate(student, [torch.randn(32, 1, 28, 28)])
    g_plain, m_plain = _gen_grads(tiny_teacher, None, 0.0)
    g_adv, m_adv = _gen_grads(tiny_teacher, student, 1.0)
    assert "gen_adv" in m_adv and "gen_adv" not in m_plain and m_adv["gen_adv"] > 0
    assert torch.isfinite(g_adv).all() and (g_adv - g_plain).abs().max() > 1e-6  # the student's disagreement pushes


def _divergence(teacher, student, x):
    """KL(teacher || student) on ``x``, in eval mode; the student's mode is left as it was."""
    was_training = student.training
    with torch.no_grad():
        out = torch.nn.functional.kl_div(student.eval()(x).log_softmax(1), teacher(x).softmax(1),
                                         reduction="batchmean").item()
    student.train(was_training)
    return out


def test_dfqf_inception_loss_falls_and_student_learns(tiny_teacher):
    student = quantize_model(tiny_teacher, QuantScheme(4, 4))
    held_out = torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(123))
    before = _divergence(tiny_teacher, student, held_out)
    cfg = DFQFConfig(steps=30, warmup_steps=30, batch_size=32, log_every=1, student_lr=0.01)
    hist = train_dfqf(tiny_teacher, student, cfg, (1, 28, 28), 10, progress=False)
    warm = [h["gen_is"] for h in hist if h["phase"] == "warmup"]
    assert sum(warm[-5:]) / 5 < sum(warm[:5]) / 5  # confident images of every class: IS loss falls
    kd = [h for h in hist if h["phase"] == "kd"]
    assert len(kd) == 30 and all("gen_adv" in h for h in kd)
    # the student learns: its divergence from the teacher on fixed inputs it never trained on falls (the KD loss
    # on the generator's own images is no measure of that: the generator is trained to raise it)
    assert _divergence(tiny_teacher, student, held_out) < 0.9 * before
    assert not student.training


def test_pixels_stay_in_the_real_input_range_and_warmups_are_not_mixed():
    cfg = DFQFConfig(pixel_mean=(0.2860,), pixel_std=(0.3530,))
    obj = _DFQFObjective(cfg)
    x = torch.linspace(-5, 5, 28 * 28).view(1, 1, 28, 28)
    y = obj.images(x)
    assert y.min().item() == pytest.approx(-0.2860 / 0.3530) and y.max().item() == pytest.approx(0.7140 / 0.3530)
    assert torch.equal(_DFQFObjective(DFQFConfig()).images(x), x)  # unbounded when the card gives no range
    assert obj.generator_key != _DFQFObjective(DFQFConfig()).generator_key
    with pytest.raises(ConfigError, match="pixel_mean"):
        config_from_dict(DFQFConfig, {"pixel_mean": [0.5], "pixel_std": []})
