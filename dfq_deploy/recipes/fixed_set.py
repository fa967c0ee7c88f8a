"""KD of a quantized student on a fixed set of images (a synthetic set on disk, or real images for the benchmark's
upper bound): calibrate on the set, then SGD steps of KD from the float teacher on augmented mini-batches."""

from __future__ import annotations

import logging
import time
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..checkpoint import NO_CHECKPOINT, Checkpointer
from ..device import module_device
from ..distributed import rank, rank_seed
from ..distill import kd_loss
from ..config import Count, Flag, config_class
from ..data.augment import augment
from ..quant import calibrate, reconstruct
from ..quant.fastpath import FusedActivationQuant
from .loop import CheckpointSection, student_optimizer, student_step
from .options import RecipeOptions, StudentOptimizer

log = logging.getLogger("dfq_deploy")


@config_class
class SetKDConfig(StudentOptimizer, RecipeOptions):
    steps: Count = 300              # student steps
    augment_pad: Count = 2          # random-crop padding (pixels); 0 = none
    augment_flip: Flag = True       # random horizontal flips


def kd_on_images(teacher: torch.nn.Module, student: torch.nn.Module, images: torch.Tensor, cfg: SetKDConfig,
                 progress: bool = True, on_step: Callable[[int, torch.nn.Module], None] | None = None,
                 name: str = "KD on image set", checkpoint: Checkpointer | None = None) -> list[dict]:
    """Calibrate ``student`` on ``images`` and train it by KD from ``teacher``. Returns the history.

    ``checkpoint``: sections ``reconstruction`` (each block) and ``kd`` (every ``checkpoint.every`` steps)."""
    ck = checkpoint or NO_CHECKPOINT
    torch.manual_seed(cfg.seed)
    rng = torch.Generator().manual_seed(cfg.seed)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    calib = _calibration_batches(images, cfg, rng, module_device(teacher))
    calibrate(student, calib)
    history: list[dict] = reconstruct(student, calib, cfg.reconstruction(), progress, ck)
    if cfg.steps == 0:
        if on_step is not None:
            on_step(0, student)
        student.eval()
        return history
    return _kd_steps(teacher, student, images, cfg, rng, history, progress, on_step, name, ck)


def _calibration_batches(images: torch.Tensor, cfg: SetKDConfig, rng: torch.Generator,
                         dev: torch.device) -> list[torch.Tensor]:
    """The first ``cfg.calib_batches`` batches of a shuffle of the set: the same in every process. The set may stay
    on the CPU; each batch goes to ``dev``."""
    order = torch.randperm(len(images), generator=rng)
    if rank() != 0:  # from here on each process draws its own batches (rank 0 continues the single-process stream)
        rng.manual_seed(rank_seed(cfg.seed))
    return [images[order[i:i + cfg.batch_size]].to(dev)
            for i in range(0, min(len(images), cfg.calib_batches * cfg.batch_size), cfg.batch_size)]


def _kd_steps(teacher, student, images, cfg: SetKDConfig, rng, history: list[dict], progress, on_step, name: str,
              ck: Checkpointer) -> list[dict]:
    """``cfg.steps`` SGD steps of KD on augmented mini-batches of the set (checkpoint section ``kd``)."""
    dev = module_device(teacher)
    opt, sched = student_optimizer((p for p in student.parameters() if p.requires_grad), cfg.student_lr,
                                   cfg.momentum, cfg.weight_decay, cfg.steps)
    section = CheckpointSection(ck, "kd", cfg.steps, rng, student=student, opt=opt, sched=sched)
    start, saved_history = section.resume()
    if saved_history is not None:
        history = saved_history
    elif on_step is not None:
        on_step(0, student)
    t0 = time.time()
    student.train()
    bar = tqdm(range(start, cfg.steps), desc=name, disable=not progress, initial=start, total=cfg.steps)
    with FusedActivationQuant(student):  # same values and gradients, fewer tensor passes (quant.fastpath)
        for step in bar:
            idx = torch.randint(0, len(images), (min(cfg.batch_size, len(images)),), generator=rng)
            x = augment(images[idx].to(dev), cfg.augment_pad, cfg.augment_flip, rng)
            with torch.no_grad():
                t_logits = teacher(x)
            loss = kd_loss(student(x), t_logits, cfg.tau)
            student_step(loss, opt, sched, step)
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                history.append({"phase": "kd", "step": step, "kd": loss.item(), "loss": loss.item(),
                                "lr": sched.get_last_lr()[0]})
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if on_step is not None:
                on_step(step + 1, student)
            section.step(step + 1, history)
    log.info("%s done: %d steps (%.0f s)", name, cfg.steps, time.time() - t0)
    student.eval()
    return history
