"""DFQF: data-free quantization-aware fine-tuning (seed paper 001, ACML 2020).

The generator is trained against the float teacher with an **inception-score** loss (confident images, every class
present: ``H(p(y|x)) - H(p(y))``), a **BatchNorm-statistics** loss and an **adversarial** loss (it also seeks images
on which the quantized student disagrees with the teacher); the low-bit student is fine-tuned by KD from the float
teacher on the generated images.

Choices the abstract leaves open, made here: the adversarial term starts once the student exists (after the
inception-score + BN-statistics warm-up) and is ``-adv_weight * KD(student, teacher)``; the generator keeps the
shared conditional architecture, but its labels are only a source of diversity (the inception-score loss does
not use them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..distill import entropy_terms, kd_loss
from ..errors import ConfigError
from .loop import KDLoopConfig, StudentObjective, run_kd_loop


@dataclass(frozen=True)
class DFQFConfig(KDLoopConfig):
    is_weight: float = 1.0      # inception-score loss weight
    adv_weight: float = 0.1     # adversarial (teacher-student disagreement) weight, joint phase only

    def __post_init__(self):
        super().__post_init__()
        if self.is_weight < 0 or self.adv_weight < 0:
            raise ConfigError("dfqf: is_weight and adv_weight must be >= 0")


class _DFQFObjective(StudentObjective):
    generator_key = "is+bns"

    def __init__(self, cfg: DFQFConfig):
        self.cfg = cfg

    def generator_loss(self, imgs, y, t_logits, bns, student, cfg):
        instance, batch = entropy_terms(t_logits)
        is_loss = instance - batch
        loss = self.cfg.is_weight * is_loss + cfg.bns_weight * bns
        m = {"gen_is": is_loss.item()}
        if student is not None and self.cfg.adv_weight:
            adv = kd_loss(student(imgs), t_logits, cfg.tau, detach_teacher=False)
            loss = loss - self.cfg.adv_weight * adv
            m["gen_adv"] = adv.item()
        return loss, m

    def loss(self, imgs, t_logits, s_logits, step, total):
        loss = kd_loss(s_logits, t_logits, self.cfg.tau)
        return loss, {"kd": loss.item()}


def train_dfqf(teacher: torch.nn.Module, student: torch.nn.Module, cfg: DFQFConfig, img_shape: tuple[int, int, int],
               num_classes: int, progress: bool = True, on_step: Callable[[int, torch.nn.Module], None] | None = None,
               run_dir=None, warmup_cache: dict | None = None) -> list[dict]:
    """Train ``student`` in place with DFQF (see module docstring)."""
    return run_kd_loop(teacher, student, cfg, _DFQFObjective(cfg), img_shape, num_classes, progress, on_step,
                       name="DFQF", warmup_cache=warmup_cache)
