"""DFQF: data-free quantization-aware fine-tuning (seed paper 001, ACML 2020).

The generator is trained against the float teacher with an **inception-score** loss (confident images, every class
present: ``H(p(y|x)) - H(p(y))``), a **BatchNorm-statistics** loss and an **adversarial** loss (it also seeks images
on which the quantized student disagrees with the teacher); the low-bit student is fine-tuned by KD from the float
teacher on the generated images.

Choices the abstract leaves open, made here: the adversarial term starts once the student exists (after the
inception-score + BN-statistics warm-up) and is ``-adv_weight * KD(student, teacher)``; the generator keeps the
shared conditional architecture, but its labels are only a source of diversity (the inception-score loss does
not use them); the generated pixels are kept inside the real input range (``pixel_mean``/``pixel_std``).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..checkpoint import Checkpointer
from ..distill import entropy_terms, kd_loss
from ..config import Weight, config_class
from .loop import KDLoopConfig, StudentObjective, Timer, run_kd_loop
from .options import PixelRange


@config_class
class DFQFConfig(PixelRange, KDLoopConfig):
    is_weight: Weight = 1.0      # inception-score loss weight
    adv_weight: Weight = 0.1     # adversarial (teacher-student disagreement) weight, joint phase only


class _DFQFObjective(StudentObjective):
    generator_key = "is+bns"

    def __init__(self, cfg: DFQFConfig):
        self.cfg = cfg
        self.bounds = None
        if cfg.pixel_mean:
            lo = torch.tensor([(0 - m) / s for m, s in zip(cfg.pixel_mean, cfg.pixel_std, strict=True)])
            hi = torch.tensor([(1 - m) / s for m, s in zip(cfg.pixel_mean, cfg.pixel_std, strict=True)])
            self.bounds = (lo.view(1, -1, 1, 1), hi.view(1, -1, 1, 1))
            self.generator_key = f"is+bns+range{cfg.pixel_mean}{cfg.pixel_std}"  # another warm-up

    def images(self, imgs):
        # the adversarial term rewards images on which the student disagrees with the teacher; unbounded pixels
        # let it win by driving activations past the student's calibrated ranges, and KD on such images then
        # pulls every range and weight away from real inputs
        if self.bounds is None:
            return imgs
        lo, hi = (b.to(imgs.device) for b in self.bounds)
        return torch.maximum(torch.minimum(imgs, hi), lo)

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
               run_dir=None, warmup_cache: dict | None = None, checkpoint: Checkpointer | None = None,
               timer: Timer | None = None) -> list[dict]:
    """Train ``student`` in place with DFQF (see module docstring)."""
    return run_kd_loop(teacher, student, cfg, _DFQFObjective(cfg), img_shape, num_classes, progress, on_step,
                       name="DFQF", warmup_cache=warmup_cache, checkpoint=checkpoint, timer=timer)
