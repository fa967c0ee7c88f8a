"""Post-training quantization, the default recipe: the student's activation scales are calibrated on

- ``zeroq`` (default): images inverted from the float teacher's BatchNorm statistics alone, no labels (ZeroQ,
  CVPR 2020), or
- ``noise``: standard-normal images (what a user without data tries first; a baseline),

then (``recon.iters > 0``, default 100) the student is reconstructed block by block against the float teacher on the
same images (:mod:`dfq_deploy.quant.reconstruct`). No generator, no KD: on the shipped teacher this measured best at
W4A4 and W3A3 of every recipe at the default budget, in a fraction of the time (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Annotated, Callable, Literal

import torch
from pydantic import Field

from ..checkpoint import Checkpointer
from ..device import module_device
from ..distributed import gather_batches, my_share, rank_seed
from ..models.zoo import ACTIVATION_MACS, ForwardCost
from ..config import Count, Rate, Weight, config_class
from ..quant import calibrate, reconstruct
from ..synthesis import invert_images
from .options import ReconOptions, RecipeOptions

log = logging.getLogger("dfq_deploy")


@config_class
class PTQConfig(RecipeOptions):
    source: Literal["zeroq", "noise"] = "zeroq"   # "zeroq" (data-free default) or "noise" (the naive baseline)
    zeroq_steps: Annotated[Count, Field(ge=1)] = 100   # Adam iterations per batch of ZeroQ images
    zeroq_lr: Rate = 0.1
    # each channel's weight range: "max" = its largest weight (Brevitas' default), "mse" = the clipping bound of
    # least quantization error (quant.weight_clip), searched before calibration
    weight_clip: Literal["max", "mse"] = "max"
    # reconstruction on by default, with one shifted / mirrored copy of the calibration images in its set: measured
    # best at the default budget; three copies or twice the steps per block measured no better (docs/benchmarks.md)
    recon: ReconOptions = ReconOptions(iters=100, augment=1)
    # the work the defaults may spend, in billions of MAC-equivalents of the teacher (models.ForwardCost.work: its
    # multiply-accumulates plus a cost per value its layers write, which is where thin layers spend their time):
    # the ZeroQ inversion's (images x steps x work per image) and the reconstruction's (steps x batch x work per
    # image, each value charged RECON_VALUE_MACS). The defaults fit both shipped teachers unscaled; a larger
    # model keeps the recipe's proportions and scales the fields it was not given (calib_batches, zeroq_steps,
    # recon.iters) down to fit, to no fewer than MIN_SCALED steps (fit_budget; docs/models.md). 0 = never scale.
    budget_gmac: Weight = 5500.0


# the fewest ZeroQ / reconstruction steps the budget scales to: below this, inverted images and learned roundings
# barely move from their start
MIN_SCALED = 20


# a reconstruction step runs a fake quantizer on every value a block writes, forward and backward, on top of
# what an inversion step does: per value it costs about twice as much (docs/benchmarks.md)
RECON_VALUE_MACS = 2 * ACTIVATION_MACS


def fit_budget(cfg: PTQConfig, cost: ForwardCost, given: set[str]) -> tuple[PTQConfig, dict]:
    """``cfg`` with the fields not in ``given`` scaled so the work fits ``cfg.budget_gmac`` for a teacher whose
    forward pass on one image costs ``cost``; and what changed (empty when nothing did).

    The ZeroQ work is ``images x steps x cost.work()``; both factors shrink by ``sqrt(budget / work)`` (whole
    batches, at least one; at least :data:`MIN_SCALED` steps), so a model 100x the budget keeps a tenth of the
    images and a tenth of the steps. The reconstruction's ``recon.iters x recon.batch x
    cost.work(RECON_VALUE_MACS)`` shrinks through ``recon.iters`` alone (at least :data:`MIN_SCALED`), since every
    block needs the same images. ``given`` holds the keys the user set, in any spelling (``recon_iters``,
    ``recon.iters``, ``recon``)."""
    if cfg.budget_gmac <= 0 or cost.work() <= 0:
        return cfg, {}
    changes: dict = {}
    zeroq = cfg.calib_batches * cfg.batch_size * cfg.zeroq_steps * cost.work()
    if cfg.source == "zeroq" and zeroq > cfg.budget_gmac:
        shrink = math.sqrt(cfg.budget_gmac / zeroq)
        if "calib_batches" not in given:
            changes["calib_batches"] = max(1, math.floor(cfg.calib_batches * shrink))
        if "zeroq_steps" not in given:
            changes["zeroq_steps"] = max(min(MIN_SCALED, cfg.zeroq_steps), math.floor(cfg.zeroq_steps * shrink))
    iters = cfg.recon.iters
    recon = iters * cfg.recon.batch * cost.work(RECON_VALUE_MACS)
    if recon > cfg.budget_gmac and not given & {"recon_iters", "recon.iters", "recon"}:
        changes["recon.iters"] = max(min(MIN_SCALED, iters), math.floor(iters * cfg.budget_gmac / recon))
    changes = {k: v for k, v in changes.items() if v != _get(cfg, k)}
    return (replace(cfg, **changes) if changes else cfg), changes


def _get(cfg, key: str):
    """``cfg``'s value of a field or a dotted section field."""
    for name in key.split("."):
        cfg = getattr(cfg, name)
    return cfg


class _InversionRecord:
    """The inversion's history (every ``log_every``-th iteration); saved with the inversion's checkpoint."""

    def __init__(self, log_every: int):
        self.log_every, self.count, self.history = log_every, 0, []

    def __call__(self, terms: dict) -> None:
        if self.count % self.log_every == 0:
            self.history.append({"phase": "inversion", "step": self.count, "gen_bns": terms["bns"]})
        self.count += 1

    def state(self) -> dict:
        return {"count": self.count, "history": list(self.history)}

    def load(self, state: dict) -> None:
        self.count, self.history = state["count"], list(state["history"])


def calibration_images(teacher: torch.nn.Module, cfg: PTQConfig, img_shape: tuple[int, int, int],
                       progress: bool = True, checkpoint: Checkpointer | None = None
                       ) -> tuple[list[torch.Tensor], list[dict]]:
    """The calibration batches of ``cfg.source`` and the inversion history (empty for noise). With a
    ``checkpoint``, the ZeroQ inversion is saved after each batch (section ``zeroq``) and continued from it."""
    n = cfg.calib_batches * cfg.batch_size
    if cfg.source == "noise":
        x = torch.randn(n, *img_shape, generator=torch.Generator().manual_seed(cfg.seed)).to(module_device(teacher))
        return list(x.split(cfg.batch_size)), []
    record = _InversionRecord(cfg.log_every)
    # several processes: each inverts its share of the batches from its own seed, and all gather the whole set
    share = len(my_share(cfg.calib_batches))
    mine: list[torch.Tensor] = []
    if share:
        x, _ = invert_images(teacher, share * cfg.batch_size, img_shape, cfg.zeroq_steps, batch_size=cfg.batch_size,
                             lr=cfg.zeroq_lr, seed=rank_seed(cfg.seed), progress=progress, desc="ZeroQ inversion",
                             on_iter=record, checkpoint=checkpoint, stage="zeroq", aux=record)
        mine = list(x.split(cfg.batch_size))
    dev = module_device(teacher)
    return [b.to(dev) for b in gather_batches(mine, cfg.calib_batches)], record.history


def set_weight_ranges(student: torch.nn.Module, cfg: PTQConfig) -> None:
    """Each weight channel's range as ``cfg.weight_clip`` says, in place; before calibration, whose activation ranges
    follow from the weights."""
    if cfg.weight_clip == "mse":
        from ..quant.weight_clip import clip_weights

        clip_weights(student)


def train_ptq(teacher: torch.nn.Module, student: torch.nn.Module, cfg: PTQConfig, img_shape: tuple[int, int, int],
              num_classes: int, progress: bool = True, on_step: Callable[[int, torch.nn.Module], None] | None = None,
              run_dir=None, warmup_cache: dict | None = None, checkpoint: Checkpointer | None = None,
              timer: Callable[[str], AbstractContextManager] | None = None) -> list[dict]:
    """Calibrate ``student`` in place, then (``recon.iters > 0``) reconstruct it block by block on the same images.
    Returns the inversion history (empty for noise) and the reconstruction's. ``checkpoint``: saved after each
    batch of ZeroQ images and each reconstructed block, and continued from there (calibration is redone: it is
    deterministic). ``timer`` is accepted as every recipe's, and unused."""
    t0 = time.perf_counter()
    batches, history = calibration_images(teacher, cfg, img_shape, progress, checkpoint)
    t1 = time.perf_counter()
    set_weight_ranges(student, cfg)
    calibrate(student, batches, progress=progress)
    t2 = time.perf_counter()
    history += reconstruct(student, batches, cfg.reconstruction(), progress, checkpoint)
    # the stage split of the default job (benchmarks/demo_time.py reads these lines from train.log)
    log.info("stage time: synthesis %.1f s, calibration %.1f s, reconstruction %.1f s", t1 - t0, t2 - t1,
             time.perf_counter() - t2)
    student.eval()
    if on_step is not None:
        on_step(0, student)
    return history
