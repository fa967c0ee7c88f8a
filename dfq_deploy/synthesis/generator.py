"""Conditional image generator (the GDFQ/ACGAN-style generator of this field, sized from the input shape)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError


class ConditionalGenerator(nn.Module):
    """Maps noise ``z`` and a class label ``y`` to a normalised image ``C x H x W``.

    ``z * embed(y)`` -> Linear -> ``width x H/4 x W/4`` -> 2 x (upsample, conv, BN, LeakyReLU) -> conv -> tanh ->
    BatchNorm without affine (so images have the zero-mean, unit-variance statistics of normalised inputs).

    Args:
        num_classes: number of labels.
        img_shape: ``(C, H, W)``; H and W must be multiples of 4.
        latent_dim: size of ``z``.
        width: channels of the first feature map.
    """

    def __init__(self, num_classes: int, img_shape: tuple[int, int, int], latent_dim: int = 100, width: int = 128):
        super().__init__()
        c, h, w = img_shape
        if h % 4 or w % 4:
            raise ModelError(f"generator needs H and W divisible by 4, got {h}x{w}")
        self.latent_dim, self.num_classes, self.img_shape = latent_dim, num_classes, tuple(img_shape)
        self.init_hw = (h // 4, w // 4)
        self.embed = nn.Embedding(num_classes, latent_dim)
        self.fc = nn.Linear(latent_dim, width * self.init_hw[0] * self.init_hw[1])
        self.width = width
        self.body = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width, 3, 1, 1),
            nn.BatchNorm2d(width, eps=0.8),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width // 2, 3, 1, 1),
            nn.BatchNorm2d(width // 2, eps=0.8),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, c, 3, 1, 1),
            nn.Tanh(),
            nn.BatchNorm2d(c, affine=False),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.fc(z * self.embed(y)).view(z.shape[0], self.width, *self.init_hw)
        return self.body(x)

    def sample(self, n: int, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``(z, y)`` and return ``(images, z, y)``."""
        dev = self.fc.weight.device
        z = torch.randn(n, self.latent_dim, generator=gen).to(dev)
        y = torch.randint(0, self.num_classes, (n,), generator=gen).to(dev)
        return self(z, y), z, y


class GeneratorPool(nn.Module):
    """Several :class:`ConditionalGenerator` s behind one ``sample``: a batch of ``n`` is split between them, so
    one optimiser trains all of them and the images come from every generator (adversarial KD's multi-generator
    option). With one generator it is exactly that generator."""

    def __init__(self, count: int, num_classes: int, img_shape: tuple[int, int, int], latent_dim: int = 100,
                 width: int = 128):
        super().__init__()
        if count < 1:
            raise ModelError(f"need at least one generator, got {count}")
        self.members = nn.ModuleList(ConditionalGenerator(num_classes, img_shape, latent_dim, width)
                                     for _ in range(count))

    def sample(self, n: int, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if len(self.members) == 1:
            return self.members[0].sample(n, gen)
        sizes = [n // len(self.members) + (i < n % len(self.members)) for i in range(len(self.members))]
        parts = [m.sample(k, gen) for m, k in zip(self.members, sizes, strict=True) if k > 0]
        return tuple(torch.cat(t) for t in zip(*parts, strict=True))
