"""Image augmentation shared by teacher pre-training, fixed-set KD and block reconstruction."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per sample, vectorised.

    Written here rather than with ``torchvision.transforms.v2``: those draw one crop per call (per batch), while this
    draws one per sample from an explicit generator, so results are reproducible for a seed.
    """
    b, c, h, w = x.shape
    dev = x.device  # the draws come from the (CPU) generator, so every device draws the same crops and flips
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(dev)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(dev)
        iy = oy[:, None] + torch.arange(h, device=dev)
        ix = ox[:, None] + torch.arange(w, device=dev)
        x = xp[torch.arange(b, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
               iy[:, None, :, None], ix[:, None, None, :]]
    if flip:
        mask = (torch.rand(b, generator=gen) < 0.5).to(dev)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x
