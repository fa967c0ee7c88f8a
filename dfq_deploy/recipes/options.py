"""The fields several recipes share, declared once: mixins of the recipe configs (``dfq_deploy.config`` holds the
field types and turns a broken rule into a ConfigError)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from ..config import BatchSize, Count, Number, Numbers, Rate, Seed, Weight, config_class
from ..errors import ConfigError
from ..quant import ReconstructionConfig


@config_class
class ReconOptions:
    """Block reconstruction after calibration.

    :func:`dfq_deploy.quant.reconstruct`'s options; the ``recon:`` section of every recipe: ``--set
    recon.iters=0``, YAML ``recon: {iters: 0}``; the flat spellings of older runs (``recon_iters``, ``recon_batch``,
    ...) are read too."""

    # steps per block (0 = off). Off unless a recipe measured better with it: `ptq` and `dmkd` turn it on
    # (docs/benchmarks.md)
    iters: Count = 0
    batch: Annotated[BatchSize, Field(ge=1)] = 32              # images per step
    qdrop: Annotated[Number, Field(ge=0, le=1)] = 0.5          # probability that an activation stays unquantized
    round_lr: Rate = 1e-2           # Adam learning rate of the learned weight rounding (AdaRound logits)
    scale_lr: Weight = 1e-2         # Adam learning rate of the activation step sizes, relative to their size
    round_weight: Weight = 0.01     # weight of the rounding regulariser
    augment: Annotated[Count, Field(le=16)] = 0   # shifted / mirrored copies of the images added to the set


@config_class
class RecipeOptions:
    """What every recipe has: a seed, its image batches, a history period and the reconstruction section."""

    seed: Seed = 0
    batch_size: BatchSize = 128                          # images per step
    calib_batches: Annotated[Count, Field(ge=1)] = 4     # batches that initialise the activation scales
    log_every: Annotated[Count, Field(ge=1)] = 10        # history sample period (steps)
    recon: ReconOptions = ReconOptions()

    def reconstruction(self) -> ReconstructionConfig:
        """The options of :func:`dfq_deploy.quant.reconstruct`, seeded with the recipe's seed."""
        r = self.recon
        return ReconstructionConfig(iters=r.iters, batch_size=r.batch, qdrop=r.qdrop, round_lr=r.round_lr,
                                    scale_lr=r.scale_lr, round_weight=r.round_weight, augment=r.augment,
                                    seed=self.seed)


@config_class
class StudentOptimizer:
    """The student's SGD (nesterov, cosine to 0) and its KD temperature."""

    student_lr: Rate = 1e-3          # 1e-4 is too slow at the default budget, 1e-2 diverges
    momentum: Annotated[Number, Field(ge=0, lt=1)] = 0.9
    weight_decay: Weight = 1e-4
    tau: Rate = 4.0                  # KD temperature


@config_class
class PixelRange:
    """The teacher's input normalisation: synthetic pixels are kept inside the range a real normalised image can
    take, ``(0 - mean) / std`` to ``(1 - mean) / std`` per channel. train-export fills both from the teacher's
    card when they are left empty; empty = unbounded."""

    pixel_mean: Numbers = ()
    pixel_std: Numbers = ()

    @model_validator(mode="after")
    def _one_std_per_mean(self):
        if len(self.pixel_mean) != len(self.pixel_std) or any(v <= 0 for v in self.pixel_std):
            raise ConfigError(f"pixel_mean={list(self.pixel_mean)} and pixel_std={list(self.pixel_std)} need the "
                              "same length and std > 0", hint="give one value per input channel, or leave both empty")
        return self
