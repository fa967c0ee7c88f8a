"""Adversarial KD for data-free quantization (seed paper 003: Choi et al., CVPR workshops 2020).

A min-max game: the generator looks for images on which the quantized student(s) disagree with the float teacher,
``max_G KL(t || s) - alpha * L_aux``, while the students minimise that disagreement. ``L_aux`` keeps the images
plausible for the teacher: a Gaussian-KL match of every BatchNorm's batch statistics to its running statistics,
plus the entropy terms (confident per-image predictions, all classes used across the batch).

Options from the paper: several generators (``generators``, each makes a share of every batch) and several
students (``students``). Extra students are copies of the student calibrated on different synthetic batches (so
they start at different activation ranges) and trained alongside; the generator maximises the students' mean
disagreement. Only the first student is exported.

The generator is warmed up on ``L_aux`` alone before any student exists.
"""

from __future__ import annotations

import copy
from typing import Annotated, Callable

import torch
from pydantic import Field

from ..checkpoint import Checkpointer, cpu_state
from ..distill import entropy_terms, kd_loss
from ..config import Count, Weight, config_class
from ..quant import calibrate, load_quantized_state
from .loop import KDLoopConfig, StudentObjective, Timer, run_kd_loop, student_optimizer, student_step


@config_class
class AdversarialConfig(KDLoopConfig):
    bns_weight: Weight = 1.0       # weight of the Gaussian-KL BN-statistics term in L_aux
    entropy_weight: Weight = 1.0   # weight of (instance entropy - batch entropy) in L_aux
    adv_weight: Weight = 1.0       # weight of the teacher-student KL the generator maximises (joint phase)
    students: Annotated[Count, Field(ge=1, le=16)] = 1   # students trained together; the first is exported


class _AdversarialObjective(StudentObjective):
    generator_key = "aux-gausskl+entropy"
    bns_mode = "gauss_kl"

    def __init__(self, cfg: AdversarialConfig):
        self.cfg = cfg
        self.extra: list[torch.nn.Module] = []
        self.opts: list[tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]] = []

    def setup(self, teacher, student, calib_images):
        cfg = self.cfg
        for i in range(1, cfg.students):
            s = copy.deepcopy(student)
            calibrate(s, [calib_images[i % len(calib_images)]])  # its own activation ranges
            s.train()
            self.extra.append(s)
            self.opts.append(student_optimizer((p for p in s.parameters() if p.requires_grad), cfg.student_lr,
                                               cfg.momentum, cfg.weight_decay, cfg.steps))

    def generator_loss(self, imgs, y, t_logits, bns, student, cfg):
        instance, batch = entropy_terms(t_logits)
        loss = self.cfg.bns_weight * bns + self.cfg.entropy_weight * (instance - batch)
        m = {"gen_entropy": (instance - batch).item()}
        if student is not None and self.cfg.adv_weight:
            adv = torch.stack([kd_loss(s(imgs), t_logits, cfg.tau, detach_teacher=False)
                               for s in [student, *self.extra]]).mean()
            loss = loss - self.cfg.adv_weight * adv
            m["gen_adv"] = adv.item()
        return loss, m

    def loss(self, imgs, t_logits, s_logits, step, total):
        loss = kd_loss(s_logits, t_logits, self.cfg.tau)
        m = {"kd": loss.item()}
        for i, (s, (opt, sched)) in enumerate(zip(self.extra, self.opts, strict=True), start=1):
            extra = kd_loss(s(imgs), t_logits, self.cfg.tau)
            student_step(extra, opt, sched, step)
            m[f"kd_student{i}"] = extra.item()
        return loss, m

    def state_dict(self):
        return {"students": [cpu_state(s) for s in self.extra], "opts": [cpu_state(o) for o, _ in self.opts],
                "scheds": [sch.state_dict() for _, sch in self.opts]}

    def load_state_dict(self, state):
        for s, (opt, sched), s_state, o_state, sch_state in zip(self.extra, self.opts, state["students"],
                                                                 state["opts"], state["scheds"], strict=True):
            load_quantized_state(s, s_state)
            opt.load_state_dict(o_state)
            sched.load_state_dict(sch_state)

    def close(self):
        self.extra, self.opts = [], []


def train_adversarial(teacher: torch.nn.Module, student: torch.nn.Module, cfg: AdversarialConfig,
                      img_shape: tuple[int, int, int], num_classes: int, progress: bool = True,
                      on_step: Callable[[int, torch.nn.Module], None] | None = None, run_dir=None,
                      warmup_cache: dict | None = None, checkpoint: Checkpointer | None = None,
                      timer: Timer | None = None) -> list[dict]:
    """Train ``student`` in place by adversarial KD (see module docstring)."""
    return run_kd_loop(teacher, student, cfg, _AdversarialObjective(cfg), img_shape, num_classes, progress, on_step,
                       name="adversarial KD", warmup_cache=warmup_cache, checkpoint=checkpoint, timer=timer)
