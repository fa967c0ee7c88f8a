"""The common data-free baseline (GDFQ lineage): a conditional generator trained against the frozen float teacher
with cross-entropy + BatchNorm-statistics loss, and the low-bit student trained by KD from the float teacher on the
generated images."""

from __future__ import annotations

from typing import Callable

import torch

from ..checkpoint import Checkpointer
from ..config import config_class
from ..distill import kd_loss
from .loop import KDLoopConfig, StudentObjective, Timer, run_kd_loop


@config_class
class GDFQConfig(KDLoopConfig):
    """Only the shared loop's settings: one float teacher, plain KD."""


class _FloatTeacherKD(StudentObjective):
    def __init__(self, tau: float):
        self.tau = tau

    def loss(self, imgs, t_logits, s_logits, step, total):
        loss = kd_loss(s_logits, t_logits, self.tau)
        return loss, {"kd": loss.item()}


def train_gdfq(teacher: torch.nn.Module, student: torch.nn.Module, cfg: GDFQConfig, img_shape: tuple[int, int, int],
               num_classes: int, progress: bool = True,
               on_step: Callable[[int, torch.nn.Module], None] | None = None, run_dir=None,
               warmup_cache: dict | None = None, checkpoint: Checkpointer | None = None,
               timer: Timer | None = None) -> list[dict]:
    """Train ``student`` in place from ``teacher`` without data (see :func:`run_kd_loop`)."""
    return run_kd_loop(teacher, student, cfg, _FloatTeacherKD(cfg.tau), img_shape, num_classes, progress, on_step,
                       warmup_cache=warmup_cache, checkpoint=checkpoint, timer=timer)
