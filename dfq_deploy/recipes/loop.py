"""The training loop every generator-based recipe shares; a recipe supplies only its student objective.

1. warm-up: the conditional generator(s) learn, against the frozen float teacher, images the teacher labels as asked
   (cross-entropy) whose BatchNorm statistics match the teacher's running statistics (a recipe may replace this
   generator loss, e.g. DFQF's inception-score loss or adversarial KD's min-max term);
2. calibration: the student's activation scales are initialised on synthetic images (default: ZeroQ images,
   inverted from the teacher's BatchNorm statistics, which give far better 4-bit ranges than generator images),
   then block reconstruction on the same images (learned weight rounding, step sizes, QDrop;
   :mod:`dfq_deploy.quant.reconstruct`) unless ``recon.iters=0``;
3. joint steps: one generator step, then one student step on the same (detached) images with the recipe's loss.

Never reads real data.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Annotated, Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from ..checkpoint import NO_CHECKPOINT, Checkpointer, cpu_state, rng_states, set_rng_states
from ..device import module_device
from ..distributed import any_true, average_gradients, broadcast_object, rank_seed
from ..config import Count, Flag, Number, Rate, config_class
from ..errors import ConfigError, TrainingError
from ..quant import calibrate, load_quantized_state, reconstruct
from ..quant.fused import FusedActivationQuant
from ..synthesis import BNStatsLoss, GeneratorPool
from ..synthesis.bn_stats import affine_batchnorm
from .options import RecipeOptions, StudentOptimizer

log = logging.getLogger("dfq_deploy")


CALIB_SOURCES = ("zeroq", "generator", "noise")


@config_class
class KDLoopConfig(StudentOptimizer, RecipeOptions):
    # defaults sized so `make demo` (the main job on 2 CPU cores) stays under 15 minutes; 400 + 150 is the accuracy
    # benchmark's budget (docs/benchmarks.md)
    steps: Count = 150            # joint steps (generator step + student step each); KD plateaus after ~100-200
    warmup_steps: Count = 400     # generator-only steps before the student starts (generator quality drives accuracy)
    latent_dim: Annotated[Count, Field(ge=1, le=4096)] = 100   # generator noise size
    gen_lr: Rate = 1e-3           # Adam(0.5, 0.999), as in GDFQ
    bns_weight: Number = 0.1      # weight of the BN-statistics term in the generator loss
    # "zeroq" (BN-statistics inverted images), "generator" images, or "noise"
    calib_source: Literal["zeroq", "generator", "noise"] = "zeroq"
    calib_steps: Annotated[Count, Field(ge=1)] = 100   # inversion iterations per batch of ZeroQ calibration images
    # generators sharing each batch (adversarial KD's multi-generator option)
    generators: Annotated[Count, Field(ge=1, le=16)] = 1
    # bfloat16 autocast for the generator and the float teacher's forward on CUDA (ignored on the CPU); the
    # fake-quantized student always computes in float32. Off by default: faster steps on a GPU, but it cost W4A4
    # accuracy beyond the seed spread (docs/scale.md)
    amp: Flag = False

    @model_validator(mode="after")
    def _generators_share_a_batch(self):
        if self.generators > self.batch_size:
            raise ConfigError(f"generators={self.generators} must be at most batch_size={self.batch_size}: each "
                              "generator makes a share of every batch", hint="e.g. --set generators=2")
        return self


class StudentObjective:
    """What a recipe supplies to the loop: the student's loss on a batch of synthetic images, and optionally its own
    generator loss (default: GDFQ's cross-entropy + BN statistics)."""

    #: names the generator loss used in warm-up; warm-ups with equal keys and settings are interchangeable
    generator_key = "ce+bns"
    #: BatchNorm-statistics distance the generator loss uses ("mse" or "gauss_kl")
    bns_mode = "mse"

    def generator_loss(self, imgs: torch.Tensor, y: torch.Tensor, t_logits: torch.Tensor, bns: torch.Tensor,
                       student: torch.nn.Module | None, cfg: KDLoopConfig) -> tuple[torch.Tensor, dict[str, float]]:
        """The generator's loss on its own batch. ``student`` is None during warm-up (no student yet)."""
        ce = F.cross_entropy(t_logits, y)
        return ce + cfg.bns_weight * bns, {"gen_ce": ce.item()}

    def images(self, imgs: torch.Tensor) -> torch.Tensor:
        """The generator's images as the teacher and student see them (default: unchanged)."""
        return imgs

    def setup(self, teacher: torch.nn.Module, student: torch.nn.Module, calib_images: list[torch.Tensor]) -> None:
        """Called once after the generator warm-up and the student's calibration."""

    def loss(self, imgs: torch.Tensor, t_logits: torch.Tensor, s_logits: torch.Tensor, step: int,
             total: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release hooks and references."""

    def state_dict(self) -> dict:
        """The objective's own training state (networks, optimisers, running values) for a checkpoint; the state
        :meth:`setup` rebuilds deterministically is not included."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (called after :meth:`setup` when a run resumes)."""


def _generator_step(gen, teacher, bns, opt, cfg, rng, objective, student=None):
    dev = module_device(teacher)
    # the frozen teacher's BatchNorms as their eval-mode affine maps (a cheaper backward to the images; issue 14)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and dev.type == "cuda"), \
            affine_batchnorm(teacher):
        imgs, _, y = gen.sample(cfg.batch_size, rng)
        imgs = objective.images(imgs)
        bns.reset()
        t_logits = teacher(imgs)
        bn = bns.loss()
    imgs, t_logits, bn = imgs.float(), t_logits.float(), bn.float()
    loss, m = objective.generator_loss(imgs, y, t_logits, bn, student, cfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(gen.parameters())
    opt.step()
    return imgs.detach(), t_logits.detach(), {"gen_loss": loss.item(), **m, "gen_bns": bn.item()}


def _restore(saved: dict, **targets) -> None:
    """Load each saved state (``saved[name]``) into its network, optimiser, scheduler or objective."""
    for name, target in targets.items():
        target.load_state_dict(saved[name])


def _teacher_id(teacher: torch.nn.Module) -> float:
    """A cheap fingerprint of the teacher's weights, for cache keys."""
    return round(sum(float(p.double().sum()) for p in teacher.parameters()), 6)


def _warmup_key(objective: StudentObjective, teacher: torch.nn.Module, cfg: KDLoopConfig, img_shape) -> tuple:
    return (objective.generator_key, objective.bns_mode, _teacher_id(teacher), tuple(img_shape),
            cfg.warmup_steps,
            cfg.batch_size, cfg.latent_dim, cfg.gen_lr, cfg.bns_weight, cfg.generators, cfg.log_every, cfg.seed)


def student_optimizer(params, lr: float, momentum: float, weight_decay: float, steps: int):
    """SGD (nesterov) with a cosine schedule to 0 over ``steps``: the student optimiser of every recipe."""
    opt = torch.optim.SGD(list(params), lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(1, steps))))
    return opt, sched


def student_step(loss: torch.Tensor, opt, sched, step: int) -> None:
    """One optimiser step on ``loss``; a non-finite loss stops training with a TrainingError that says what to do."""
    if any_true(not math.isfinite(loss.item())):  # every process stops together
        raise TrainingError(f"student loss became {loss.item()} at step {step}",
                            hint="lower student_lr (--set student_lr=...) or raise the bit widths")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(p for group in opt.param_groups for p in group["params"])
    opt.step()
    sched.step()


def _zeroq_images(teacher, cfg: KDLoopConfig, img_shape, cache: dict | None, progress: bool,
                  checkpoint: Checkpointer | None = None) -> list[torch.Tensor]:
    """ZeroQ calibration batches (own seeded random stream, so the loop's streams are untouched); cached."""
    from .ptq import PTQConfig, calibration_images

    key = ("zeroq-calib", _teacher_id(teacher), tuple(img_shape), cfg.calib_batches, cfg.batch_size, cfg.calib_steps,
           cfg.seed)
    if cache is not None and key in cache:
        return cache[key]
    t0 = time.time()
    batches, _ = calibration_images(teacher, PTQConfig(source="zeroq", calib_batches=cfg.calib_batches,
                                                       batch_size=cfg.batch_size, zeroq_steps=cfg.calib_steps,
                                                       seed=cfg.seed), img_shape, progress, checkpoint)
    log.info("ZeroQ calibration images: %d (%.0f s)", sum(len(b) for b in batches), time.time() - t0)
    if cache is not None:
        cache[key] = batches
    return batches


def run_kd_loop(teacher: torch.nn.Module, student: torch.nn.Module, cfg: KDLoopConfig, objective: StudentObjective,
                img_shape: tuple[int, int, int], num_classes: int, progress: bool = True,
                on_step: Callable[[int, torch.nn.Module], None] | None = None, name: str = "data-free KD",
                warmup_cache: dict | None = None, checkpoint: Checkpointer | None = None) -> list[dict]:
    """Train ``student`` in place from ``teacher`` without data. Returns the history (one dict per sample).

    ``on_step(step, student)``, when given, is called after calibration (step 0) and after every student step
    (benchmarks use it to track accuracy; it must restore the student's mode if it changes it).

    ``warmup_cache``, when given, keeps the state after the generator warm-up (generator, its optimiser, random
    generators, history) keyed by the objective's generator loss and every setting the warm-up depends on, so a
    benchmark that trains several students (other bit widths, other student losses) warms each generator up once.
    A run restored from the cache continues exactly as a fresh one would.

    ``checkpoint``: sections ``zeroq`` (each batch of calibration images), ``warmup`` and ``kd`` (every
    ``checkpoint.every`` steps and at their last step) and ``reconstruction`` (each block). A run resumed from them
    redoes only the deterministic work between stages (calibration, the objective's setup) and is bit-identical to
    an uninterrupted one on the CPU.

    Raises:
        TrainingError: the student's loss became non-finite.
    """
    ck = checkpoint or NO_CHECKPOINT
    torch.manual_seed(cfg.seed)  # weight initialisations: the same in every process
    rng = torch.Generator().manual_seed(rank_seed(cfg.seed))  # images and batches: each process its own
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    dev = module_device(teacher)  # random draws stay on the CPU generator ``rng``; modules and batches live on dev
    gen = GeneratorPool(cfg.generators, num_classes, img_shape, cfg.latent_dim).to(dev)
    gen.train()
    g_opt = torch.optim.Adam(gen.parameters(), lr=cfg.gen_lr, betas=(0.5, 0.999))
    history: list[dict] = []
    t0 = time.time()
    key = _warmup_key(objective, teacher, cfg, img_shape) if warmup_cache is not None else None
    # before the loop's BN hooks exist: the inversion must not leave terms (and their graphs) in them
    calib = _zeroq_images(teacher, cfg, img_shape, warmup_cache, progress, ck) if cfg.calib_source == "zeroq" \
        else None

    def warmup_state(done: int) -> dict:
        return {"step": done, "gen": cpu_state(gen), "opt": cpu_state(g_opt), "rng": rng_states(rng),
                "history": [dict(h) for h in history]}

    try:
        with BNStatsLoss(teacher, mode=objective.bns_mode) as bns:
            if key is not None and key in warmup_cache:
                saved = warmup_cache[key]
                gen.load_state_dict(saved["gen"])
                g_opt.load_state_dict(saved["opt"])
                rng.set_state(saved["rng"])
                torch.set_rng_state(saved["torch_rng"])
                history = copy.deepcopy(saved["history"])
                log.info("generator warm-up restored from cache (%d steps)", cfg.warmup_steps)
            else:
                start = 0
                saved = ck.resumed("warmup")
                if saved is not None:
                    start, history = saved["step"], list(saved["history"])
                    _restore(saved, gen=gen, opt=g_opt)
                    set_rng_states(saved["rng"], rng)
                bar = tqdm(range(start, cfg.warmup_steps), desc="generator warm-up", disable=not progress,
                           initial=start, total=cfg.warmup_steps)
                for step in bar:
                    _, _, m = _generator_step(gen, teacher, bns, g_opt, cfg, rng, objective)
                    if step % cfg.log_every == 0:
                        history.append({"phase": "warmup", "step": step, **m})
                    bar.set_postfix(loss=f"{m['gen_loss']:.3f}", bns=f"{m['gen_bns']:.3f}")
                    ck.step("warmup", step + 1, lambda: warmup_state(step + 1), total=cfg.warmup_steps)
                log.info("generator warm-up done: %d steps (%.0f s)", cfg.warmup_steps, time.time() - t0)
                if key is not None:
                    warmup_cache[key] = {"gen": copy.deepcopy(gen.state_dict()),
                                         "opt": copy.deepcopy(g_opt.state_dict()), "rng": rng.get_state(),
                                         "torch_rng": torch.get_rng_state(), "history": copy.deepcopy(history)}

            gen.eval()
            with torch.no_grad():
                if cfg.calib_source == "noise":
                    calib = [torch.randn(cfg.batch_size, *img_shape, generator=rng).to(dev)
                             for _ in range(cfg.calib_batches)]
                elif cfg.calib_source == "generator":
                    calib = [gen.sample(cfg.batch_size, rng)[0] for _ in range(cfg.calib_batches)]
                if cfg.calib_source != "zeroq":  # every process calibrates on rank 0's images
                    calib = [t.to(dev) for t in broadcast_object([t.cpu() for t in calib])]
                calibrate(student, calib)
                bns.reset()  # drop terms the calibration images' inversion left (they hold autograd graphs)
            history += reconstruct(student, calib, cfg.reconstruction(), progress, ck)
            with torch.no_grad():
                objective.setup(teacher, student, calib)
            bns.reset()
            gen.train()

            s_opt, sched = student_optimizer((p for p in student.parameters() if p.requires_grad), cfg.student_lr,
                                             cfg.momentum, cfg.weight_decay, cfg.steps)
            start = 0
            saved = ck.resumed("kd")
            if saved is not None:
                start, history = saved["step"], list(saved["history"])
                load_quantized_state(student, saved["student"])
                _restore(saved, gen=gen, g_opt=g_opt, s_opt=s_opt, sched=sched, objective=objective)
                set_rng_states(saved["rng"], rng)

            def kd_state(done: int) -> dict:
                return {"step": done, "gen": cpu_state(gen), "g_opt": cpu_state(g_opt), "student": cpu_state(student),
                        "s_opt": cpu_state(s_opt), "sched": sched.state_dict(), "objective": objective.state_dict(),
                        "rng": rng_states(rng), "history": [dict(h) for h in history]}

            if on_step is not None and start == 0:
                on_step(0, student)
            student.train()
            bar = tqdm(range(start, cfg.steps), desc=name, disable=not progress, initial=start, total=cfg.steps)
            # Brevitas' activation quantizers through one fused autograd function (same values and gradients,
            # fewer tensor passes; dfq_deploy.quant.fused)
            with FusedActivationQuant(student):
                for step in bar:
                    imgs, t_logits, m = _generator_step(gen, teacher, bns, g_opt, cfg, rng, objective, student)
                    s_logits = student(imgs)
                    loss, extra = objective.loss(imgs, t_logits, s_logits, step, cfg.steps)
                    student_step(loss, s_opt, sched, step)
                    m.update(loss=loss.item(), **extra)
                    if step % cfg.log_every == 0 or step == cfg.steps - 1:
                        history.append({"phase": "kd", "step": step, **m, "lr": sched.get_last_lr()[0]})
                    bar.set_postfix(loss=f"{m['loss']:.3f}", gen=f"{m['gen_loss']:.3f}")
                    if on_step is not None:
                        on_step(step + 1, student)
                    ck.step("kd", step + 1, lambda: kd_state(step + 1), total=cfg.steps)
            last = history[-1].get("loss", float("nan")) if history else float("nan")
            log.info("%s done: %d steps, last loss %.4f (%.0f s total)", name, cfg.steps, last, time.time() - t0)
    finally:
        objective.close()
    student.eval()
    return history
