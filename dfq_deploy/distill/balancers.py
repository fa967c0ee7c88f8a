"""Loss balancers: reduce a dict of per-teacher losses to one scalar (ModelOpt's DistillationLossBalancer shape).

``FixedBalancer`` uses constant weights. ``DMKDBalancer`` is DMKD's tiny learnable float network: it maps per-teacher
signals to per-teacher weights as training goes. How it learns, and why it cannot collapse onto the easiest teacher,
is in its docstring.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FixedBalancer(nn.Module):
    """Weighted sum with constant weights (normalised to sum to 1)."""

    def __init__(self, weights: dict[str, float]):
        super().__init__()
        total = sum(weights.values())
        assert total > 0, "balancer weights must not all be zero"
        self.weights = {k: v / total for k, v in weights.items()}

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[k] * v for k, v in losses.items())


class DMKDBalancer(nn.Module):
    """Dynamic per-teacher weights from a tiny MLP shared across teachers.

    Per teacher ``k`` the input is a feature vector ``x_k`` (see :func:`teacher_features`); the MLP gives a score
    ``z_k`` and the weights are ``w = floor / K + (1 - floor) * softmax(z)``: every teacher keeps at least
    ``floor / K`` of the weight, so no teacher is ever switched off.

    Learning signal (``meta_loss``): a first-order look-ahead on the student's last layer. ``align_k`` is the cosine
    between teacher ``k``'s gradient on the last layer's weights for the batch that was just used, and the float
    teacher's gradient for the *next*, fresh batch. Raising ``w_k`` for a well-aligned teacher lowers the float
    teacher's loss on unseen images after the student's step. Lower loss alone does not earn weight, so the
    balancer does not drift to the teacher that is easiest to match. An entropy bonus keeps the weights from
    saturating early.
    """

    def __init__(self, teachers: list[str], in_features: int = 4, hidden: int = 16, floor: float = 0.2,
                 entropy_weight: float = 0.01):
        super().__init__()
        assert 0.0 <= floor < 1.0
        self.teachers = list(teachers)
        self.floor = floor
        self.entropy_weight = entropy_weight
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[2].weight)  # start uniform
        nn.init.zeros_(self.net[2].bias)

    def weights(self, features: torch.Tensor) -> torch.Tensor:
        """``features``: ``K x in_features`` -> ``K`` weights summing to 1."""
        z = self.net(features).squeeze(-1)
        k = z.shape[0]
        return self.floor / k + (1.0 - self.floor) * F.softmax(z, dim=0)

    def forward(self, losses: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
        w = self.weights(features).detach()  # the student's loss does not train the balancer
        return sum(w[i] * losses[name] for i, name in enumerate(self.teachers))

    def meta_loss(self, features: torch.Tensor, align: torch.Tensor) -> torch.Tensor:
        """Loss for the balancer: prefer teachers whose step generalises (``align``), keep some entropy."""
        w = self.weights(features)
        entropy = -(w * w.clamp_min(1e-12).log()).sum()
        return -(w * align.detach()).sum() - self.entropy_weight * entropy


def teacher_features(kd_losses: torch.Tensor, agreement: torch.Tensor, confidence: torch.Tensor,
                     progress: float) -> torch.Tensor:
    """Stack per-teacher signals into the balancer's ``K x 4`` input (all detached, roughly unit scale).

    Args:
        kd_losses: ``K`` KD losses of the student against each teacher.
        agreement: ``K`` top-1 agreement (0..1) of the student with each teacher on the batch.
        confidence: ``K`` mean max-probability of each teacher on the batch.
        progress: fraction of training done (0..1).
    """
    rel = kd_losses / kd_losses.mean().clamp_min(1e-8)
    prog = torch.full_like(rel, float(progress))
    return torch.stack([rel, agreement, confidence, prog], dim=1).detach()
