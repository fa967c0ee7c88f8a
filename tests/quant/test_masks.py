"""QDrop's masks and mix (``dfq_deploy/quant/masks.py``): their statistics, their bits and their gradients."""

import pytest
import torch


@pytest.mark.parametrize("p", [0.5, 0.1, 0.9, 0.75, 0.3])
def test_keep_mask_draws_with_the_asked_probability(p):
    from dfq_deploy.quant.masks import keep_mask

    m = keep_mask((64, 16, 28, 28), p, torch.Generator().manual_seed(0))
    assert m.dtype == torch.float32 and m.shape == (64, 16, 28, 28)
    assert bool(((m == 0) | (m == 1)).all())
    assert abs(float(m.mean()) - p) < 0.003  # 802 816 draws: 5 standard deviations < 0.003
    # no structure between neighbours: within a byte, across bytes (8) and across 56-bit words (56)
    flat = m.flatten()
    for lag in (1, 8, 56):
        assert abs(float((flat[:-lag] * flat[lag:]).mean()) - p * p) < 0.003, lag
    same = keep_mask((64, 16, 28, 28), p, torch.Generator().manual_seed(0))
    assert torch.equal(m, same) and not torch.equal(m, keep_mask(m.shape, p, torch.Generator().manual_seed(1)))
    assert bool((keep_mask((3, 5), 1.0, torch.Generator()) == 1).all())
    assert bool((keep_mask((3, 5), 0.0, torch.Generator()) == 0).all())


@pytest.mark.parametrize("p", [0.5, 0.3, 0.6875, 0.0001])
def test_keep_mask_is_a_comparison_of_uniform_draws(p):
    """Each element is [U < p] for U whose binary digits are the same bit of successive 64-bit draws (bit-sliced
    comparison): recomputed here element by element from the same random words."""
    from dfq_deploy.quant.masks import keep_mask

    k = int(round(p * 65536))
    m_digits = max(i for i in range(16) if (k >> (15 - i)) & 1) + 1
    n = 56 * 5 + 13
    words = (n + 55) // 56
    planes = torch.empty((m_digits, words), dtype=torch.int64).random_(generator=torch.Generator().manual_seed(4))
    expect = []
    for e in range(n):
        word, bit = divmod(e, 56)
        u = sum(((int(planes[i, word]) >> bit) & 1) << (15 - i) for i in range(m_digits))  # U * 65536, truncated
        expect.append(1.0 if u < k else 0.0)  # truncating U to m digits decides U < p exactly (p has m digits)
    got = keep_mask((n,), p, torch.Generator().manual_seed(4))
    assert got.tolist() == expect


def test_keep_lerp_is_where():
    from dfq_deploy.quant.masks import keep_lerp, keep_mask

    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 8, 9, 9, generator=g) * torch.logspace(-8, 8, 9)
    fp = torch.randn(4, 8, 9, 9, generator=g) * 1e6
    q.view(-1)[:5], fp.view(-1)[5:10] = -0.0, -0.0
    keep = keep_mask(q.shape, 0.5, g)
    mixed = keep_lerp(q, fp, keep)
    expect = torch.where(keep.bool(), fp, q)
    assert torch.equal(mixed, expect)  # equal values; a zero's sign may differ (-0.0 == 0.0)
    nonzero = expect != 0
    assert torch.equal(mixed[nonzero].view(torch.int32), expect[nonzero].view(torch.int32))  # same bits
    qg, fg = q.clone().requires_grad_(), fp.clone().requires_grad_()
    keep_lerp(qg, fg, keep).backward(torch.ones_like(q))
    assert torch.equal(fg.grad, keep) and torch.equal(qg.grad, 1 - keep)
