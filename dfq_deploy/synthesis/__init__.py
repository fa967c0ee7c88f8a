"""Synthetic images for data-free training: generators, BatchNorm-statistics matching, image inversion."""

from .bn_stats import BNStatsLoss
from .generator import ConditionalGenerator, GeneratorPool
from .inversion import invert_images, tv_loss

__all__ = ["BNStatsLoss", "ConditionalGenerator", "GeneratorPool", "invert_images", "tv_loss"]
