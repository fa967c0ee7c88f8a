"""A labelled evaluation set already normalised for a model, plus batching helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ..errors import DataError


@dataclass
class EvalSet:
    """Normalised float images ``N x C x H x W``, int64 labels and class names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: Sequence[str]
    name: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, batch_size: int = 500) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self), batch_size):
            yield self.images[i : i + batch_size], self.labels[i : i + batch_size]

    def subset(self, limit: int | None) -> "EvalSet":
        if limit is None or limit >= len(self):
            return self
        return EvalSet(self.images[:limit], self.labels[:limit], self.class_names, f"{self.name}[:{limit}]")


def normalize_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``N x C x H x W`` -> float, scaled to [0, 1] then standardised per channel."""
    x = images.float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


def load_eval_set(name: str, mean: Sequence[float], std: Sequence[float], limit: int | None = None,
                  root: str | None = None) -> EvalSet:
    """Load an evaluation set by name (``fashion-mnist``) and normalise it with the model's statistics."""
    if name == "fashion-mnist":
        from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

        imgs, labels = load_fashion_mnist("test", root)
        data = EvalSet(normalize_uint8(imgs, mean, std), labels, FASHION_MNIST_CLASSES, "fashion-mnist-test")
        return data.subset(limit)
    raise DataError(f"unknown evaluation data {name!r}", hint="use 'fashion-mnist'")
