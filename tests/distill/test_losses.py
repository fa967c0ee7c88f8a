import torch

from dfq_deploy.distill import kd_loss


def test_kd_loss_zero_iff_equal_and_gradient_flows_to_student_only():
    t = torch.randn(16, 10, requires_grad=True)
    assert kd_loss(t.detach().clone(), t).abs().item() < 1e-6
    s = torch.randn(16, 10, requires_grad=True)
    loss = kd_loss(s, t, tau=4.0)
    assert loss.item() > 0
    loss.backward()
    assert s.grad.abs().sum() > 0 and t.grad is None


def test_kd_loss_falls_when_student_moves_towards_teacher():
    t = torch.randn(8, 10)
    s = torch.randn(8, 10)
    assert kd_loss(0.5 * s + 0.5 * t, t) < kd_loss(s, t)
