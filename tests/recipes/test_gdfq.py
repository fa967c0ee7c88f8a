import pytest
import torch

from dfq_deploy.config import config_from_dict
from dfq_deploy.errors import ConfigError
from dfq_deploy.quant import QuantScheme, quantize_model
from dfq_deploy.recipes import GDFQConfig, train_gdfq


def test_config_rejects_unknown_and_bad_values():
    assert config_from_dict(GDFQConfig, {"steps": 5.0}).steps == 5
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict(GDFQConfig, {"stepz": 5})
    with pytest.raises(ConfigError):
        config_from_dict(GDFQConfig, {"steps": -1})
    with pytest.raises(ConfigError):
        config_from_dict(GDFQConfig, {"tau": "hot"})
    with pytest.raises(ConfigError, match="calib_source"):
        config_from_dict(GDFQConfig, {"calib_source": "imagenet"})


def test_gdfq_student_moves_towards_teacher(tiny_teacher):
    student = quantize_model(tiny_teacher, QuantScheme(4, 4))
    cfg = GDFQConfig(steps=40, warmup_steps=10, batch_size=32, log_every=1, student_lr=0.01)
    before = {k: v.clone() for k, v in tiny_teacher.state_dict().items()}
    seen = []
    hist = train_gdfq(tiny_teacher, student, cfg, (1, 28, 28), 10, progress=False,
                      on_step=lambda step, s: seen.append((step, s.training)))
    assert seen[0] == (0, False) and seen[-1][0] == 40 and len(seen) == 41
    kd = [h["kd"] for h in hist if h["phase"] == "kd"]
    assert len(kd) == 40
    assert sum(kd[-8:]) / 8 < sum(kd[:8]) / 8  # the KD loss falls
    warm = [h["gen_ce"] for h in hist if h["phase"] == "warmup"]
    assert warm[-1] < warm[0]  # the generator learns to make images the teacher labels as asked
    assert all(torch.equal(before[k], v) for k, v in tiny_teacher.state_dict().items())  # teacher frozen
    assert not student.training


def test_zero_steps_is_calibration_only_ptq(tiny_teacher):
    """warmup_steps=0, steps=0, calib_source=noise: post-training quantization calibrated on noise, no training."""
    student = quantize_model(tiny_teacher, QuantScheme(8, 8))
    before = {k: v.clone() for k, v in student.state_dict().items() if "weight" in k}
    hist = train_gdfq(tiny_teacher, student, GDFQConfig(steps=0, warmup_steps=0, calib_source="noise"),
                      (1, 28, 28), 10, progress=False)
    assert hist == []
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items() if k in before)
    x = torch.randn(128, 1, 28, 28)
    with torch.no_grad():
        agree = (student(x).argmax(1) == tiny_teacher(x).argmax(1)).float().mean()
    assert agree > 0.9  # calibrated W8A8 tracks the float model
