import pytest

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
