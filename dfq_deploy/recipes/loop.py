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
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
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
from ..quant.fastpath import FusedActivationQuant
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
    # the frozen teacher's BatchNorms as their eval-mode affine maps (a cheaper backward to the images)
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


Timer = Callable[[str], AbstractContextManager]


def no_timer(phase: str) -> AbstractContextManager:
    """The default :data:`Timer`: times nothing."""
    return nullcontext()


class CheckpointSection:
    """A checkpointed stretch of training steps (``warmup``, ``kd``): saved every ``checkpoint.every`` steps and at
    its last step as the step count, the student (when given, reloaded through its quantizers), ``parts`` (name ->
    anything with ``state_dict`` / ``load_state_dict``: networks, optimisers, schedulers, the objective), the
    random generator's state and the history. :meth:`resume` loads a saved one back."""

    def __init__(self, checkpoint: Checkpointer, name: str, total: int, rng: torch.Generator,
                 student: torch.nn.Module | None = None, **parts):
        self.ck, self.name, self.total, self.rng = checkpoint, name, total, rng
        self.student, self.parts = student, parts

    def resume(self) -> tuple[int, list[dict] | None]:
        """(steps done, history) of the saved section, loaded into its objects; (0, None) when none was saved."""
        saved = self.ck.resumed(self.name)
        if saved is None:
            return 0, None
        if self.student is not None:
            load_quantized_state(self.student, saved["student"])
        _restore(saved, **self.parts)
        set_rng_states(saved["rng"], self.rng)
        return saved["step"], list(saved["history"])

    def step(self, done: int, history: list[dict]) -> None:
        """``done`` steps are complete: saved when due (see :meth:`Checkpointer.step`)."""
        self.ck.step(self.name, done, lambda: self._state(done, history), total=self.total)

    def _state(self, done: int, history: list[dict]) -> dict:
        state = {"step": done, **{k: cpu_state(v) for k, v in self.parts.items()}}
        if self.student is not None:
            state["student"] = cpu_state(self.student)
        return {**state, "rng": rng_states(self.rng), "history": [dict(h) for h in history]}


@dataclass
class _Run:
    """What the loop's phases share."""

    teacher: torch.nn.Module
    student: torch.nn.Module
    cfg: KDLoopConfig
    objective: StudentObjective
    img_shape: tuple[int, int, int]
    progress: bool
    ck: Checkpointer
    timer: Timer
    rng: torch.Generator
    gen: GeneratorPool
    g_opt: torch.optim.Optimizer
    history: list[dict] = field(default_factory=list)
    t0: float = 0.0


def run_kd_loop(teacher: torch.nn.Module, student: torch.nn.Module, cfg: KDLoopConfig, objective: StudentObjective,
                img_shape: tuple[int, int, int], num_classes: int, progress: bool = True,
                on_step: Callable[[int, torch.nn.Module], None] | None = None, name: str = "data-free KD",
                warmup_cache: dict | None = None, checkpoint: Checkpointer | None = None,
                timer: Timer | None = None) -> list[dict]:
    """Train ``student`` in place from ``teacher`` without data. Returns the history (one dict per sample).

    ``on_step(step, student)``, when given, is called after calibration (step 0) and after every student step
    (benchmarks use it to track accuracy; it must restore the student's mode if it changes it).

    ``warmup_cache``, when given, keeps the state after the generator warm-up (generator, its optimiser, random
    generators, history) keyed by the objective's generator loss and every setting the warm-up depends on, so a
    benchmark that trains several students (other bit widths, other student losses) warms each generator up once.
    A run restored from the cache continues exactly as a fresh one would.

    ``timer(phase)``, when given, is entered around every generator step (``phase`` is ``"warmup"`` or
    ``"joint"``): benchmarks time them with it.

    ``checkpoint``: sections ``zeroq`` (each batch of calibration images), ``warmup`` and ``kd`` (every
    ``checkpoint.every`` steps and at their last step) and ``reconstruction`` (each block). A run resumed from them
    redoes only the deterministic work between stages (calibration, the objective's setup) and is bit-identical to
    an uninterrupted one on the CPU.

    Raises:
        TrainingError: the student's loss became non-finite.
    """
    ck = checkpoint or NO_CHECKPOINT
    run = _start(teacher, student, cfg, objective, img_shape, num_classes, progress, ck, timer or no_timer)
    # before the loop's BN hooks exist: the inversion must not leave terms (and their graphs) in them
    calib = _zeroq_images(teacher, cfg, img_shape, warmup_cache, progress, ck) if cfg.calib_source == "zeroq" \
        else None
    try:
        with BNStatsLoss(teacher, mode=objective.bns_mode) as bns:
            _warm_up(run, bns, warmup_cache)
            _calibrate(run, bns, calib)
            _joint_steps(run, bns, on_step, name)
    finally:
        objective.close()
    student.eval()
    return run.history


def _start(teacher, student, cfg: KDLoopConfig, objective, img_shape, num_classes, progress, ck, timer) -> _Run:
    """Seed, freeze the teacher, build the generator(s) and their optimiser."""
    torch.manual_seed(cfg.seed)  # weight initialisations: the same in every process
    rng = torch.Generator().manual_seed(rank_seed(cfg.seed))  # images and batches: each process its own
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    dev = module_device(teacher)  # random draws stay on the CPU generator ``rng``; modules and batches live on dev
    gen = GeneratorPool(cfg.generators, num_classes, img_shape, cfg.latent_dim).to(dev)
    gen.train()
    g_opt = torch.optim.Adam(gen.parameters(), lr=cfg.gen_lr, betas=(0.5, 0.999))
    return _Run(teacher, student, cfg, objective, img_shape, progress, ck, timer, rng, gen, g_opt, t0=time.time())


def _warm_up(run: _Run, bns: BNStatsLoss, cache: dict | None) -> None:
    """Phase 1: generator-only steps against the teacher (restored from ``cache`` when it holds them)."""
    cfg = run.cfg
    key = _warmup_key(run.objective, run.teacher, cfg, run.img_shape) if cache is not None else None
    if key is not None and key in cache:
        saved = cache[key]
        run.gen.load_state_dict(saved["gen"])
        run.g_opt.load_state_dict(saved["opt"])
        run.rng.set_state(saved["rng"])
        torch.set_rng_state(saved["torch_rng"])
        run.history = copy.deepcopy(saved["history"])
        log.info("generator warm-up restored from cache (%d steps)", cfg.warmup_steps)
        return
    section = CheckpointSection(run.ck, "warmup", cfg.warmup_steps, run.rng, gen=run.gen, opt=run.g_opt)
    start, saved_history = section.resume()
    run.history = saved_history if saved_history is not None else run.history
    bar = tqdm(range(start, cfg.warmup_steps), desc="generator warm-up", disable=not run.progress, initial=start,
               total=cfg.warmup_steps)
    for step in bar:
        with run.timer("warmup"):
            _, _, m = _generator_step(run.gen, run.teacher, bns, run.g_opt, cfg, run.rng, run.objective)
        if step % cfg.log_every == 0:
            run.history.append({"phase": "warmup", "step": step, **m})
        bar.set_postfix(loss=f"{m['gen_loss']:.3f}", bns=f"{m['gen_bns']:.3f}", refresh=False)
        section.step(step + 1, run.history)
    log.info("generator warm-up done: %d steps (%.0f s)", cfg.warmup_steps, time.time() - run.t0)
    if key is not None:
        cache[key] = {"gen": copy.deepcopy(run.gen.state_dict()), "opt": copy.deepcopy(run.g_opt.state_dict()),
                      "rng": run.rng.get_state(), "torch_rng": torch.get_rng_state(),
                      "history": copy.deepcopy(run.history)}


def _calibrate(run: _Run, bns: BNStatsLoss, calib: list[torch.Tensor] | None) -> None:
    """Phase 2: the student's activation scales from ``calib`` (ZeroQ images) or the configured source, block
    reconstruction on the same images, then the objective's setup."""
    cfg, dev = run.cfg, module_device(run.teacher)
    run.gen.eval()
    with torch.no_grad():
        if cfg.calib_source == "noise":
            calib = [torch.randn(cfg.batch_size, *run.img_shape, generator=run.rng).to(dev)
                     for _ in range(cfg.calib_batches)]
        elif cfg.calib_source == "generator":
            calib = [run.gen.sample(cfg.batch_size, run.rng)[0] for _ in range(cfg.calib_batches)]
        if cfg.calib_source != "zeroq":  # every process calibrates on rank 0's images
            calib = [t.to(dev) for t in broadcast_object([t.cpu() for t in calib])]
        calibrate(run.student, calib)
        bns.reset()  # drop terms the calibration images' inversion left (they hold autograd graphs)
    run.history += reconstruct(run.student, calib, cfg.reconstruction(), run.progress, run.ck)
    with torch.no_grad():
        run.objective.setup(run.teacher, run.student, calib)
    bns.reset()
    run.gen.train()


def _joint_steps(run: _Run, bns: BNStatsLoss, on_step, name: str) -> None:
    """Phase 3: one generator step, then one student step on the same images, ``cfg.steps`` times."""
    cfg, student = run.cfg, run.student
    s_opt, sched = student_optimizer((p for p in student.parameters() if p.requires_grad), cfg.student_lr,
                                     cfg.momentum, cfg.weight_decay, cfg.steps)
    section = CheckpointSection(run.ck, "kd", cfg.steps, run.rng, student=student, gen=run.gen, g_opt=run.g_opt,
                                s_opt=s_opt, sched=sched, objective=run.objective)
    start, saved_history = section.resume()
    run.history = saved_history if saved_history is not None else run.history
    if on_step is not None and start == 0:
        on_step(0, student)
    student.train()
    bar = tqdm(range(start, cfg.steps), desc=name, disable=not run.progress, initial=start, total=cfg.steps)
    # Brevitas' activation quantizers through one fused autograd function (same values and gradients, fewer tensor
    # passes; dfq_deploy.quant.fastpath)
    with FusedActivationQuant(student):
        for step in bar:
            with run.timer("joint"):
                imgs, t_logits, m = _generator_step(run.gen, run.teacher, bns, run.g_opt, cfg, run.rng,
                                                    run.objective, student)
            loss, extra = run.objective.loss(imgs, t_logits, student(imgs), step, cfg.steps)
            student_step(loss, s_opt, sched, step)
            m.update(loss=loss.item(), **extra)
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                run.history.append({"phase": "kd", "step": step, **m, "lr": sched.get_last_lr()[0]})
            bar.set_postfix(loss=f"{m['loss']:.3f}", gen=f"{m['gen_loss']:.3f}", refresh=False)
            if on_step is not None:
                on_step(step + 1, student)
            section.step(step + 1, run.history)
    last = run.history[-1].get("loss", float("nan")) if run.history else float("nan")
    log.info("%s done: %d steps, last loss %.4f (%.0f s total)", name, cfg.steps, last, time.time() - run.t0)
