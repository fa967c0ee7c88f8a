import pytest
import torch

from dfq_deploy.config import config_from_dict
from dfq_deploy.errors import ConfigError
from dfq_deploy.quant import QuantScheme, calibrate, quantize_model
from dfq_deploy.recipes import AdversarialConfig, train_adversarial
from dfq_deploy.recipes.adversarial import _AdversarialObjective
from dfq_deploy.synthesis import GeneratorPool


def test_config_validation():
    with pytest.raises(ConfigError):
        config_from_dict(AdversarialConfig, {"students": 0})
    with pytest.raises(ConfigError, match="generators"):
        config_from_dict(AdversarialConfig, {"generators": 0})


def test_min_max_gradient_reaches_every_generator(tiny_teacher):
    for p in tiny_teacher.parameters():
        p.requires_grad_(False)
    student = quantize_model(tiny_teacher, QuantScheme(2, 2))
    calibrate(student, [torch.randn(32, 1, 28, 28)])
    torch.manual_seed(0)
    pool = GeneratorPool(2, 10, (1, 28, 28), 16, width=16)
    imgs, _, y = pool.sample(15, torch.Generator().manual_seed(0))
    assert imgs.shape[0] == 15 and y.shape == (15,)
    cfg = AdversarialConfig(bns_weight=0.0, entropy_weight=0.0, adv_weight=1.0)
    loss, m = _AdversarialObjective(cfg).generator_loss(imgs, y, tiny_teacher(imgs), torch.zeros(()), student, cfg)
    assert loss.item() == pytest.approx(-m["gen_adv"])  # the generator maximises the disagreement
    loss.backward()
    for g in pool.members:
        assert g.fc.weight.grad is not None and g.fc.weight.grad.abs().sum() > 0


def test_two_generators_two_students(tiny_teacher):
    student = quantize_model(tiny_teacher, QuantScheme(4, 4))
    before = student.state_dict()["fc.weight"].clone()
    cfg = AdversarialConfig(steps=20, warmup_steps=20, batch_size=32, log_every=1, student_lr=0.01, generators=2,
                            students=2)
    hist = train_adversarial(tiny_teacher, student, cfg, (1, 28, 28), 10, progress=False)
    warm = [h["gen_loss"] for h in hist if h["phase"] == "warmup"]
    assert sum(warm[-5:]) / 5 < sum(warm[:5]) / 5  # the auxiliary loss falls in warm-up
    kd = [h for h in hist if h["phase"] == "kd"]
    assert len(kd) == 20 and all("kd_student1" in h and "gen_adv" in h for h in kd)
    assert all(torch.isfinite(torch.tensor([h["kd"], h["kd_student1"], h["gen_adv"]])).all() for h in kd)
    assert not torch.equal(before, student.state_dict()["fc.weight"])
    assert not student.training


def test_extra_students_train(tiny_teacher):
    student = quantize_model(tiny_teacher, QuantScheme(4, 4))
    calib = [torch.randn(16, 1, 28, 28) for _ in range(2)]
    calibrate(student, calib)
    obj = _AdversarialObjective(AdversarialConfig(students=3, student_lr=0.01, steps=5))
    obj.setup(tiny_teacher, student, calib)
    assert len(obj.extra) == 2
    before = [s.state_dict()["fc.weight"].clone() for s in obj.extra]
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        t = tiny_teacher(x)
    obj.loss(x, t, student(x), 0, 5)
    assert all(not torch.equal(b, s.state_dict()["fc.weight"]) for b, s in zip(before, obj.extra, strict=True))
    obj.close()
    assert obj.extra == []
