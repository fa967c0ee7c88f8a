"""Weight grids at zero point 0: Brevitas' narrow symmetric grid, or the full signed grid that uses every code.

A signed b-bit weight at zero point 0 has codes ``[-2**(b-1), 2**(b-1) - 1]``. Brevitas' default weight quantizer
uses the narrow range ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` with the step ``max|w| / (2**(b-1) - 1)``: at 3 bits 7 of
the 8 codes, at 2 bits 3 of 4. The full grid keeps the lowest code and picks, per channel, the smallest step at
which the channel still fits without clipping: ``max(max(w) / (2**(b-1) - 1), -min(w) / 2**(b-1))``. A channel
whose largest magnitude is negative gets a finer step (by 2**(b-1) / (2**(b-1) - 1): 4/3 at 3 bits, 2 at 2 bits); one
whose largest magnitude is positive keeps its step and can use the lowest code for its negative weights. Integer
runtimes take any code range at zero point 0, so the export is the same integer graph.

Brevitas computes the step as ``statistic / 2**(b-1)`` for a signed grid that is not narrow; :class:`FullGridStats`
is the statistic that makes that step the one above (and the absolute maximum, Brevitas' own, on a narrow grid).
"""

from __future__ import annotations

import torch
from torch import nn

WEIGHT_GRIDS = ("narrow", "full")


class FullGridStats(nn.Module):
    """Brevitas weight statistic (``scaling_stats_impl``): ``max(max(w) * 2**(b-1) / (2**(b-1) - 1), -min(w))``
    per channel on a full grid, ``max|w|`` on a narrow one. Its arguments are resolved by Brevitas' injector by
    name, like those of its own ``AbsMax``."""

    def __init__(self, bit_width, narrow_range: bool, stats_reduce_dim: int | None = None, keepdim: bool = False):
        super().__init__()
        half = 2 ** (int(bit_width) - 1)
        self.narrow = bool(narrow_range)
        self.factor = half / (half - 1) if half > 1 else 1.0
        self.stats_reduce_dim, self.keepdim = stats_reduce_dim, keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stats_reduce_dim is None:
            hi, lo = x.max(), x.min()
        else:
            hi = x.max(dim=self.stats_reduce_dim, keepdim=self.keepdim)[0]
            lo = x.min(dim=self.stats_reduce_dim, keepdim=self.keepdim)[0]
        if self.narrow:
            return torch.maximum(hi.abs(), lo.abs())
        return torch.maximum(hi * self.factor, -lo)


def scale_setter(ratio: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Per row of ``ratio`` (weights over their step, one channel per row): the index of the weight that sets the
    step, the one nearest its end of the grid ``[low, high]`` relative to that end."""
    reach = torch.where(ratio >= 0, ratio / high, ratio / low)
    return reach.argmax(1)


def grid_text(weight_grid: str) -> str:
    """`` weight_grid=full`` where the grid is not the default (the scheme's tag says the rest), else nothing."""
    return "" if weight_grid == "narrow" else f" weight_grid={weight_grid}"
