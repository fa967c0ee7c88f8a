import pytest
import torch
import torch.nn.functional as F

from dfq_deploy.errors import ModelError
from dfq_deploy.synthesis import BNStatsLoss, ConditionalGenerator


def test_generator_shapes():
    g = ConditionalGenerator(10, (1, 28, 28))
    imgs, z, y = g.sample(8, torch.Generator().manual_seed(0))
    assert imgs.shape == (8, 1, 28, 28) and z.shape == (8, 100) and y.shape == (8,)
    assert ConditionalGenerator(5, (3, 32, 32))(torch.randn(2, 100), torch.tensor([0, 4])).shape == (2, 3, 32, 32)
    with pytest.raises(ModelError):
        ConditionalGenerator(10, (1, 30, 30))


def test_bn_stats_loss_is_zero_on_matching_statistics():
    bn = torch.nn.BatchNorm2d(3).eval()
    bn.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
    bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    x = torch.randn(4096, 3, 4, 4)
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), unbiased=False, keepdim=True)
    x = x * bn.running_var.sqrt().view(1, 3, 1, 1) + bn.running_mean.view(1, 3, 1, 1)
    with BNStatsLoss(torch.nn.Sequential(bn)) as h:
        bn(x)
        assert h.loss().item() < 1e-6
        bn(torch.randn(64, 3, 4, 4))
        assert h.loss().item() > 0.5
    assert not bn._forward_hooks  # hooks removed


def test_generator_step_reaches_generator_and_lowers_the_loss(tiny_teacher):
    torch.manual_seed(0)
    for p in tiny_teacher.parameters():
        p.requires_grad_(False)
    g = ConditionalGenerator(10, (1, 28, 28), width=32)
    opt = torch.optim.Adam(g.parameters(), lr=1e-2, betas=(0.5, 0.999))
    rng = torch.Generator().manual_seed(0)
    losses = []
    with BNStatsLoss(tiny_teacher) as bns:
        for step in range(40):
            imgs, _, y = g.sample(64, rng)
            loss = F.cross_entropy(tiny_teacher(imgs), y) + 0.1 * bns.loss()
            opt.zero_grad()
            loss.backward()
            if step == 0:
                assert g.fc.weight.grad is not None and g.fc.weight.grad.abs().sum() > 0
                assert g.embed.weight.grad.abs().sum() > 0
            opt.step()
            losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_gauss_kl_bn_loss_is_zero_at_the_running_statistics():
    import torch
    from torch import nn

    from dfq_deploy.synthesis import BNStatsLoss

    bn = nn.BatchNorm2d(3).eval()
    bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
    bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    x = torch.randn(4096, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), unbiased=False, keepdim=True)
    matched = x * bn.running_var.sqrt()[None, :, None, None] + bn.running_mean[None, :, None, None]
    with BNStatsLoss(bn, mode="gauss_kl") as bns:
        bn(matched)
        assert bns.loss().item() < 1e-5
        bn(x)
        assert bns.loss().item() > 0.1


def test_inversion_lowers_ce_and_bns(tiny_teacher):
    from dfq_deploy.synthesis import invert_images, tv_loss

    terms = []
    x, y = invert_images(tiny_teacher, 20, (1, 28, 28), 40, num_classes=10, batch_size=20, lr=0.2, tv_weight=1e-3,
                         progress=False, on_iter=terms.append)
    assert x.shape == (20, 1, 28, 28) and y.shape == (20,) and not x.requires_grad
    assert terms[-1]["ce"] < 0.5 * terms[0]["ce"] and terms[-1]["bns"] < terms[0]["bns"]
    assert float(tv_loss(x)) > 0
