"""KD losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 4.0,
            detach_teacher: bool = True) -> torch.Tensor:
    """Hinton KD: ``tau^2 * KL(softmax(t / tau) || softmax(s / tau))``, averaged over the batch.

    ``detach_teacher=False`` keeps the teacher's graph: adversarial generators push on both models' responses."""
    t = F.log_softmax((teacher_logits.detach() if detach_teacher else teacher_logits) / tau, dim=1)
    s = F.log_softmax(student_logits / tau, dim=1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * tau * tau


def entropy_terms(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(instance, batch)`` entropies of a batch's predictions: the mean entropy of each ``p(y|x)`` and the
    entropy of their mean ``p(y)``. The inception score is ``exp(batch - instance)``; generators minimise
    ``instance - batch`` (confident images, all classes present)."""
    p = F.softmax(logits, dim=1)
    logp = F.log_softmax(logits, dim=1)
    instance = -(p * logp).sum(1).mean()
    mean_p = p.mean(0)
    batch = -(mean_p * torch.log(mean_p.clamp_min(1e-12))).sum()
    return instance, batch
