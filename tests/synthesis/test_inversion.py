import math

import pytest
import torch

from dfq_deploy.synthesis import invert_images


def test_pixel_range_bounds_every_pixel_and_the_loss_still_falls(tiny_teacher):
    lo, hi = (0 - 0.2860) / 0.3530, (1 - 0.2860) / 0.3530
    seen = []
    free, _ = invert_images(tiny_teacher, 8, (1, 28, 28), 25, num_classes=10, batch_size=8, lr=0.3,
                            progress=False)
    bounded, y = invert_images(tiny_teacher, 8, (1, 28, 28), 25, num_classes=10, batch_size=8, lr=0.3,
                               pixel_range=([lo], [hi]), progress=False, on_iter=seen.append)
    assert free.min() < lo or free.max() > hi  # unbounded inversion leaves the real pixel range
    assert bounded.min() >= lo - 1e-6 and bounded.max() <= hi + 1e-6
    assert seen[-1]["ce"] < seen[0]["ce"] and seen[-1]["bns"] < seen[0]["bns"]
    assert y.shape == (8,)


def test_pixel_range_must_match_the_channels(tiny_teacher):
    with pytest.raises(ValueError, match="pixel_range"):
        invert_images(tiny_teacher, 2, (1, 28, 28), 1, pixel_range=([0.0, 0.0], [1.0, 1.0]), progress=False)
    with pytest.raises(ValueError, match="pixel_range"):
        invert_images(tiny_teacher, 2, (1, 28, 28), 1, pixel_range=([1.0], [0.0]), progress=False)


def test_inversion_skips_weight_gradients_and_restores_them(tiny_teacher):
    """Only the pixels learn: the teacher's weights get no gradient during inversion (a faster backward), the
    images are the same as with a frozen teacher, and the weights' requires_grad is given back afterwards."""
    import torch

    seen = []
    x1, _ = invert_images(tiny_teacher, 8, (1, 28, 28), 3, batch_size=8, seed=1, progress=False,
                          on_iter=lambda t: seen.append(any(p.requires_grad for p in tiny_teacher.parameters())))
    assert seen == [False] * 3
    assert all(p.requires_grad for p in tiny_teacher.parameters())
    for p in tiny_teacher.parameters():
        p.requires_grad_(False)
    x2, _ = invert_images(tiny_teacher, 8, (1, 28, 28), 3, batch_size=8, seed=1, progress=False)
    assert torch.equal(x1, x2)
    assert not any(p.requires_grad for p in tiny_teacher.parameters())  # a frozen model stays frozen


def test_channel_moments_have_the_gradient_autograd_gives():
    """BNStatsLoss' one-pass per-channel moments (issue 14): values and gradients as torch's own mean() chain."""
    import torch

    from dfq_deploy.synthesis.bn_stats import _ChannelMoments

    x = torch.randn(6, 4, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _ChannelMoments.apply(t), (x,))
    m, sq = _ChannelMoments.apply(x)
    assert torch.allclose(m, x.mean((0, 2, 3))) and torch.allclose(sq, (x * x).mean((0, 2, 3)))
    (g1,) = torch.autograd.grad((m * torch.arange(4.0)).sum() + sq.sum() * 3, x)
    (g2,) = torch.autograd.grad((x.mean((0, 2, 3)) * torch.arange(4.0)).sum() + (x * x).mean((0, 2, 3)).sum() * 3, x)
    assert torch.allclose(g1, g2)


def test_affine_batchnorm_is_eval_batchnorm_and_is_removed(tiny_teacher):
    """Inversion's BatchNorm as a multiply-add (issue 14): the teacher's outputs and input gradients as before, the
    BN-statistics hooks see the same inputs, and nothing is left on the modules afterwards."""
    import torch

    from dfq_deploy.synthesis import BNStatsLoss
    from dfq_deploy.synthesis.bn_stats import affine_batchnorm

    tiny_teacher.eval()
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    outs = []
    for affine in (False, True):
        xi = x.clone().requires_grad_(True)
        with BNStatsLoss(tiny_teacher) as bns:
            if affine:
                with affine_batchnorm(tiny_teacher):
                    assert any("forward" in vars(m) for m in tiny_teacher.modules())
                    loss = tiny_teacher(xi).square().sum() + bns.loss()
            else:
                loss = tiny_teacher(xi).square().sum() + bns.loss()
            loss.backward()
        outs.append((loss.detach(), xi.grad))
    assert torch.allclose(outs[0][0], outs[1][0], rtol=1e-5)
    # float32 reassociation moves each gradient by a few ulps of the *largest* terms summed into it, not of its own
    # value (an element near zero is a difference of large terms), so the bound scales with the gradient's magnitude:
    # 1e-5 of it is about 100 ulps, far below what a wrong scale, shift or eps in the multiply-add would move
    scale = float(outs[0][1].abs().max())
    assert torch.allclose(outs[0][1], outs[1][1], rtol=1e-4, atol=1e-5 * scale)
    assert not any("forward" in vars(m) for m in tiny_teacher.modules())
    bn = next(m for m in tiny_teacher.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with affine_batchnorm(tiny_teacher):
        bn.train()  # a BatchNorm put back in training mode takes its own path (and updates its statistics)
        before = bn.running_mean.clone()
        tiny_teacher(x)
        assert not torch.equal(before, bn.running_mean)
    tiny_teacher.eval()


class _Overflows(torch.nn.Module):
    """A BatchNorm whose input is finite on the first ``finite`` forward passes and then overflows float32."""

    def __init__(self, finite: int):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(1)
        self.finite, self.calls = finite, 0

    def forward(self, x):
        self.calls += 1
        return self.bn(x if self.calls <= self.finite else x * 1e30).flatten(1).mean(1, keepdim=True)


def test_a_diverging_inversion_keeps_each_batch_at_its_lowest_finite_loss(caplog):
    import logging

    losses = []
    model = _Overflows(finite=3)
    with caplog.at_level(logging.WARNING, logger="dfq_deploy"):
        x, _ = invert_images(model, 4, (1, 4, 4), 10, batch_size=4, progress=False,
                             on_iter=lambda t: losses.append(t["bns"]))
    assert torch.isfinite(x).all() and x.shape == (4, 1, 4, 4)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)  # the step that overflowed ended the batch
    # the images kept are those of the lowest loss seen
    from dfq_deploy.synthesis.bn_stats import BNStatsLoss, affine_batchnorm

    with affine_batchnorm(model), BNStatsLoss(model) as bns:
        model.finite = model.calls + 1
        model(x)
        assert bns.loss().item() == pytest.approx(min(losses), rel=1e-6)
    assert "overflowed at step 3 of batch 0" in caplog.text


def test_an_inversion_whose_first_loss_overflows_is_a_training_error():
    from dfq_deploy.errors import TrainingError

    with pytest.raises(TrainingError) as e:
        invert_images(_Overflows(finite=0), 4, (1, 4, 4), 5, batch_size=4, progress=False)
    assert "source=noise" in e.value.hint
