"""Synthetic images for data-free training: generators and BatchNorm-statistics matching."""

from .bn_stats import BNStatsLoss
from .generator import ConditionalGenerator

__all__ = ["BNStatsLoss", "ConditionalGenerator"]
