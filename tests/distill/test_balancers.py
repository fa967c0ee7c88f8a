import pytest
import torch

from dfq_deploy.distill import DMKDBalancer, FixedBalancer, teacher_features


def test_fixed_balancer_normalises():
    b = FixedBalancer({"a": 1.0, "b": 3.0})
    out = b({"a": torch.tensor(2.0), "b": torch.tensor(4.0)})
    assert out.item() == pytest.approx(0.25 * 2 + 0.75 * 4)


def test_dmkd_weights_start_uniform_and_respect_the_floor():
    torch.manual_seed(0)
    b = DMKDBalancer(["fp", "w8a8", "w6a6"], floor=0.3)
    feats = torch.randn(3, 4)
    w = b.weights(feats)
    assert torch.allclose(w, torch.full((3,), 1 / 3))
    with torch.no_grad():
        b.net[2].weight.fill_(50.0)  # extreme scores
    w = b.weights(torch.randn(3, 4) * 10)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert w.min().item() >= 0.1 - 1e-6  # floor / K


def test_student_loss_does_not_train_the_balancer():
    b = DMKDBalancer(["a", "b"])
    la = torch.tensor(1.0, requires_grad=True)
    out = b({"a": la, "b": torch.tensor(2.0)}, torch.randn(2, 4))
    out.backward()
    assert la.grad is not None
    assert all(p.grad is None for p in b.parameters())


def test_meta_loss_moves_weight_towards_the_aligned_teacher_but_not_all_of_it():
    torch.manual_seed(0)
    b = DMKDBalancer(["fp", "w8a8", "w6a6"], floor=0.2, entropy_weight=0.0)
    opt = torch.optim.Adam(b.parameters(), lr=0.05)
    feats = teacher_features(torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.7, 0.8, 0.9]),
                             torch.tensor([0.9, 0.9, 0.8]), 0.5)
    align = torch.tensor([0.1, 0.9, 0.2])  # the W8A8 teacher's step generalises best
    w0 = b.weights(feats).detach()
    for _ in range(200):
        loss = b.meta_loss(feats, align)
        opt.zero_grad()
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in b.parameters())
        opt.step()
    w = b.weights(feats).detach()
    assert w[1] > w0[1] + 0.3
    assert w.min() >= 0.2 / 3 - 1e-6  # the floor keeps the others in
