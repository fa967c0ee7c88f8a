"""The common data-free baseline (GDFQ lineage): a conditional generator trained against the frozen float teacher
with cross-entropy + BatchNorm-statistics loss, and the low-bit student trained by KD on the generated images.

Never reads real data: the teacher's weights and BatchNorm running statistics are the only knowledge used.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..distill import kd_loss
from ..errors import ConfigError, TrainingError
from ..quant import calibrate
from ..synthesis import BNStatsLoss, ConditionalGenerator

log = logging.getLogger("dfq_deploy")


@dataclass(frozen=True)
class GDFQConfig:
    steps: int = 300              # joint steps (generator step + student step each); KD plateaus after ~100-200
    warmup_steps: int = 800       # generator-only steps before the student starts (generator quality drives accuracy)
    batch_size: int = 128         # synthetic images per step
    latent_dim: int = 100         # generator noise size
    gen_lr: float = 1e-3          # Adam(0.5, 0.999), as in GDFQ
    student_lr: float = 1e-3      # SGD nesterov, cosine to 0 (1e-4 is too slow at this budget, 1e-2 diverges)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    bns_weight: float = 0.1       # weight of the BN-statistics term in the generator loss
    tau: float = 4.0              # KD temperature
    calib_batches: int = 4        # batches that initialise the activation scales
    calib_source: str = "generator"   # "generator" images or standard-normal "noise"
    log_every: int = 10           # history sample period (steps)
    seed: int = 0

    def __post_init__(self):
        if self.steps < 0 or self.warmup_steps < 0 or self.batch_size < 2 or self.calib_batches < 1:
            raise ConfigError("gdfq: steps/warmup_steps must be >= 0, batch_size >= 2, calib_batches >= 1")
        if self.calib_source not in ("generator", "noise"):
            raise ConfigError(f"gdfq: calib_source must be 'generator' or 'noise', not {self.calib_source!r}")
        if self.gen_lr <= 0 or self.student_lr <= 0 or self.tau <= 0:
            raise ConfigError("gdfq: learning rates and tau must be positive")


def _generator_step(gen, teacher, bns, opt, cfg, rng):
    imgs, _, y = gen.sample(cfg.batch_size, rng)
    t_logits = teacher(imgs)
    ce = F.cross_entropy(t_logits, y)
    bn = bns.loss()
    loss = ce + cfg.bns_weight * bn
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return imgs.detach(), t_logits.detach(), {"gen_ce": ce.item(), "gen_bns": bn.item()}


def train_gdfq(teacher: torch.nn.Module, student: torch.nn.Module, cfg: GDFQConfig, img_shape: tuple[int, int, int],
               num_classes: int, progress: bool = True,
               on_step: Callable[[int, torch.nn.Module], None] | None = None) -> list[dict]:
    """Train ``student`` in place from ``teacher`` without data. Returns the loss history (one dict per sample).

    ``on_step(step, student)``, when given, is called after calibration (step 0) and after every student step
    (benchmarks use it to track accuracy; it must restore the student's mode if it changes it).
    """
    torch.manual_seed(cfg.seed)
    rng = torch.Generator().manual_seed(cfg.seed)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    gen = ConditionalGenerator(num_classes, img_shape, cfg.latent_dim)
    gen.train()
    g_opt = torch.optim.Adam(gen.parameters(), lr=cfg.gen_lr, betas=(0.5, 0.999))
    history: list[dict] = []
    t0 = time.time()
    with BNStatsLoss(teacher) as bns:
        bar = tqdm(range(cfg.warmup_steps), desc="generator warm-up", disable=not progress)
        for step in bar:
            _, _, m = _generator_step(gen, teacher, bns, g_opt, cfg, rng)
            if step % cfg.log_every == 0:
                history.append({"phase": "warmup", "step": step, **m})
            bar.set_postfix(ce=f"{m['gen_ce']:.3f}", bns=f"{m['gen_bns']:.3f}")
        log.info("generator warm-up done: %d steps, CE %.3f, BNS %.3f (%.0f s)", cfg.warmup_steps,
                 history[-1]["gen_ce"] if history else float("nan"),
                 history[-1]["gen_bns"] if history else float("nan"), time.time() - t0)

        gen.eval()
        with torch.no_grad():
            if cfg.calib_source == "noise":
                calib = [torch.randn(cfg.batch_size, *img_shape, generator=rng) for _ in range(cfg.calib_batches)]
            else:
                calib = [gen.sample(cfg.batch_size, rng)[0] for _ in range(cfg.calib_batches)]
            calibrate(student, calib)
        bns.reset()
        gen.train()

        s_params = [p for p in student.parameters() if p.requires_grad]
        s_opt = torch.optim.SGD(s_params, lr=cfg.student_lr, momentum=cfg.momentum, nesterov=True,
                                weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            s_opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / max(1, cfg.steps))))
        if on_step is not None:
            on_step(0, student)
        student.train()
        bar = tqdm(range(cfg.steps), desc="data-free KD", disable=not progress)
        for step in bar:
            imgs, t_logits, m = _generator_step(gen, teacher, bns, g_opt, cfg, rng)
            s_logits = student(imgs)
            loss = kd_loss(s_logits, t_logits, cfg.tau)
            s_opt.zero_grad(set_to_none=True)
            loss.backward()
            s_opt.step()
            sched.step()
            m["kd"] = loss.item()
            if not math.isfinite(m["kd"]):
                raise TrainingError(f"KD loss became {m['kd']} at step {step}",
                                    hint="lower --student-lr or raise the bit widths")
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                history.append({"phase": "kd", "step": step, **m, "lr": sched.get_last_lr()[0]})
            bar.set_postfix(kd=f"{m['kd']:.3f}", ce=f"{m['gen_ce']:.3f}")
            if on_step is not None:
                on_step(step + 1, student)
        log.info("data-free KD done: %d steps, last KD loss %.4f (%.0f s total)", cfg.steps,
                 history[-1].get("kd", float("nan")), time.time() - t0)
    student.eval()
    return history
