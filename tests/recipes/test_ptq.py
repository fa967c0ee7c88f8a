import pytest
import torch

from dfq_deploy.config import config_from_dict
from dfq_deploy.errors import ConfigError
from dfq_deploy.quant import QuantScheme, quantize_model
from dfq_deploy.recipes import PTQConfig, train_ptq
from dfq_deploy.recipes.ptq import calibration_images
from dfq_deploy.synthesis import BNStatsLoss


def test_config_validation():
    with pytest.raises(ConfigError, match="source"):
        config_from_dict(PTQConfig, {"source": "imagenet"})


def test_zeroq_images_match_bn_statistics_better_than_noise(tiny_teacher):
    cfg = PTQConfig(source="zeroq", calib_batches=1, batch_size=32, zeroq_steps=60, log_every=1)
    zq, hist = calibration_images(tiny_teacher, cfg, (1, 28, 28), progress=False)
    noise, none = calibration_images(tiny_teacher, PTQConfig(source="noise", calib_batches=1, batch_size=32),
                                       (1, 28, 28), False)
    assert none == [] and len(hist) == 60 and hist[-1]["gen_bns"] < hist[0]["gen_bns"]
    with BNStatsLoss(tiny_teacher) as bns, torch.no_grad():
        tiny_teacher(zq[0])
        zq_loss = bns.loss().item()
        tiny_teacher(noise[0])
        noise_loss = bns.loss().item()
    assert zq_loss < 0.7 * noise_loss  # measured 0.45 vs 0.86


def test_calibration_only_ptq_changes_no_weight(tiny_teacher):
    student = quantize_model(tiny_teacher, QuantScheme(8, 8))
    before = {k: v.clone() for k, v in student.state_dict().items() if k.endswith("weight")}
    cfg = PTQConfig(source="noise", calib_batches=1, batch_size=32, recon_iters=0)
    train_ptq(tiny_teacher, student, cfg, (1, 28, 28), 10,
              progress=False)
    assert all(torch.equal(before[k], student.state_dict()[k]) for k in before)
    assert not student.training


def test_ptq_reconstruction_runs_after_calibration(tiny_teacher):
    student = quantize_model(tiny_teacher, QuantScheme(4, 4))
    cfg = PTQConfig(source="noise", calib_batches=1, batch_size=32, recon_iters=5)
    hist = train_ptq(tiny_teacher, student, cfg, (1, 28, 28),
                     10, progress=False)
    rec = [h for h in hist if h["phase"] == "reconstruction"]
    assert [h["block"] for h in rec] == ["conv1", "layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1", "fc"]


def test_the_budget_scales_only_what_was_not_given_and_keeps_small_models_as_they_are():
    from dfq_deploy.models import ForwardCost
    from dfq_deploy.recipes.ptq import MIN_SCALED, RECON_VALUE_MACS, PTQConfig, fit_budget

    cfg = PTQConfig(recon_iters=100)
    same, changed = fit_budget(cfg, ForwardCost(0.031, 0.000154), set())  # the shipped teacher: the defaults fit
    assert same == cfg and changed == {}
    resnet18 = ForwardCost(1.81, 0.00248)  # at 224x224
    scaled, changed = fit_budget(cfg, resnet18, set())
    zeroq = scaled.calib_batches * scaled.batch_size * scaled.zeroq_steps * resnet18.work()
    full = cfg.calib_batches * cfg.batch_size * cfg.zeroq_steps * resnet18.work()
    assert changed and zeroq < full / 10 and scaled.zeroq_steps >= MIN_SCALED and scaled.calib_batches >= 1
    recon = scaled.recon.iters * scaled.recon.batch * resnet18.work(RECON_VALUE_MACS)
    assert recon <= cfg.budget_gmac < (scaled.recon.iters + 1) * scaled.recon.batch * resnet18.work(RECON_VALUE_MACS)
    assert "recon.iters" in changed and scaled.recon.augment == cfg.recon.augment  # the section's other fields kept
    # MobileNetV2 at 224x224: a sixth of ResNet-18's MACs, more of its values written: fewer reconstruction steps
    mobile, _ = fit_budget(cfg, ForwardCost(0.30, 0.00668), set())
    assert mobile.recon.iters < scaled.recon.iters
    for spelling in ("recon_iters", "recon.iters"):  # the flat key of older runs and the nested one
        given, changed = fit_budget(cfg, resnet18, {"zeroq_steps", spelling})  # what the user set is kept
        assert given.zeroq_steps == cfg.zeroq_steps and given.recon.iters == cfg.recon.iters
        assert "zeroq_steps" not in changed and "recon.iters" not in changed
    assert fit_budget(PTQConfig(budget_gmac=0), ForwardCost(50.0, 1.0), set())[1] == {}
    huge, _ = fit_budget(cfg, ForwardCost(1000.0, 1.0), set())
    assert (huge.calib_batches, huge.zeroq_steps, huge.recon.iters) == (1, MIN_SCALED, MIN_SCALED)


def test_work_per_image_charges_the_values_layers_write_so_thin_models_are_not_free(tiny_teacher):
    import torchvision

    from dfq_deploy.models import forward_cost, gmac_per_image
    from dfq_deploy.models.zoo import ACTIVATION_MACS
    from dfq_deploy.recipes.ptq import PTQConfig

    outputs = []  # what the Conv/Linear layers write for one image, counted here by hand
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out[0].numel()))
             for m in tiny_teacher.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    tiny_teacher(torch.zeros(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    gmac = gmac_per_image(tiny_teacher, (1, 28, 28))
    assert forward_cost(tiny_teacher, (1, 28, 28)).work() == pytest.approx(gmac + ACTIVATION_MACS * sum(outputs) / 1e9)
    assert forward_cost(tiny_teacher, (1, 28, 28)).gvalues == pytest.approx(sum(outputs) / 1e9)
    # a depthwise-heavy model does few MACs for the values it writes: by MACs alone it would look 6x cheaper than
    # ResNet-18 and keep the full defaults' proportions where it costs about as much time per image
    mobile = torchvision.models.mobilenet_v2(num_classes=10).eval()
    resnet = torchvision.models.resnet18(num_classes=10).eval()
    shape = (3, 224, 224)
    assert gmac_per_image(mobile, shape) < gmac_per_image(resnet, shape) / 5
    assert forward_cost(mobile, shape).work() > forward_cost(resnet, shape).work() / 2
    # every shipped teacher runs the defaults as they are
    from dfq_deploy.models import load_teacher
    from dfq_deploy.models.zoo import shipped_teachers
    from dfq_deploy.recipes.ptq import fit_budget

    for name in shipped_teachers():
        teacher, card = load_teacher(name)
        assert fit_budget(PTQConfig(), forward_cost(teacher, card.input_shape), set()) == (PTQConfig(), {}), name
