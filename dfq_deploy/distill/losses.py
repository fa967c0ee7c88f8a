"""KD losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 4.0) -> torch.Tensor:
    """Hinton KD: ``tau^2 * KL(softmax(t / tau) || softmax(s / tau))``, averaged over the batch."""
    t = F.log_softmax(teacher_logits.detach() / tau, dim=1)
    s = F.log_softmax(student_logits / tau, dim=1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * tau * tau
