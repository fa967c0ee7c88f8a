"""A labelled evaluation set already normalised for a model, plus batching helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ..errors import DataError
from ..progress import leave_inner_bars


# Input values per evaluation batch at most. Evaluation holds a batch's activations at once, and at 224x224 a batch
# of hundreds of images holds more of them in a VGG's first layers than a small machine has memory; bounding the
# batch by input values leaves small inputs (28x28, 32x32) their full batches.
BATCH_INPUT_VALUES = 1 << 22


def fitting_batch(image_shape: Sequence[int], most: int) -> int:
    """``most`` images per batch, fewer where images this large would exceed :data:`BATCH_INPUT_VALUES`."""
    return max(1, min(most, BATCH_INPUT_VALUES // max(1, math.prod(image_shape))))


@dataclass
class EvalSet:
    """Normalised float images ``N x C x H x W``, int64 labels (-1 = unlabelled) and class names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: Sequence[str]
    name: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def labelled(self) -> bool:
        return len(self) > 0 and bool((self.labels >= 0).all())

    def batches(self, batch_size: int = 500) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of at most ``batch_size`` images (fewer for large images: :func:`fitting_batch`)."""
        batch_size = fitting_batch(self.images.shape[1:], batch_size)
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
                  root: str | None = None, input_shape: Sequence[int] | None = None,
                  class_names: Sequence[str] | None = None) -> EvalSet:
    """Load evaluation images by name and normalise them with the model's statistics.

    ``fashion-mnist``: the Debian test split. ``imagefolder:PATH``: one sub-folder per class (torchvision
    ``ImageFolder``), resized and centre-cropped to ``input_shape`` as torchvision's evaluation transforms do;
    labelled when every folder name is one of ``class_names``.
    ``synthetic``: standard-normal inputs of ``input_shape`` (``limit`` of them, default 512), unlabelled.
    """
    if name == "fashion-mnist":
        from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

        imgs, labels = load_fashion_mnist("test", root)
        data = EvalSet(normalize_uint8(imgs, mean, std), labels, FASHION_MNIST_CLASSES, "fashion-mnist-test")
        return data.subset(limit)
    if name == "synthetic":
        if input_shape is None:
            raise DataError("synthetic data needs the model's input shape")
        n = limit or 512
        x = torch.randn(n, *input_shape, generator=torch.Generator().manual_seed(0))
        return EvalSet(x, torch.full((n,), -1, dtype=torch.long), list(class_names or []), f"synthetic[{n}]")
    if name.startswith("imagefolder:"):
        return _image_folder(name.split(":", 1)[1], mean, std, limit, input_shape, class_names)
    raise DataError(f"unknown evaluation data {name!r}", hint="use fashion-mnist, imagefolder:PATH or synthetic")


def _image_folder(path: str, mean, std, limit, input_shape, class_names) -> EvalSet:
    from pathlib import Path

    from torchvision import datasets, transforms

    if input_shape is None:
        raise DataError("imagefolder data needs the model's input shape")
    if not Path(path).is_dir():
        raise DataError(f"image folder {path} not found", hint="give a folder with one sub-folder of images per class")
    c, h, w = input_shape
    tf = transforms.Compose([transforms.Grayscale(1) if c == 1 else transforms.Lambda(lambda im: im.convert("RGB")),
                             transforms.Lambda(lambda im: _resize_crop(im, h, w)), transforms.ToTensor(),
                             transforms.Normalize(mean, std)])
    try:
        ds = datasets.ImageFolder(path, transform=tf)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"cannot read images from {path}: {e}",
                        hint="one sub-folder per class, each holding .png/.jpg images") from e
    names = [n.lower() for n in (class_names or [])]
    labelled = bool(names) and all(folder.lower() in names for folder in ds.classes)
    n = min(len(ds), limit or len(ds))
    images, labels = [], []
    from PIL import Image

    for i in range(n):
        try:
            x, folder_idx = ds[i]
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # PIL's errors on bad bytes
            raise DataError(f"cannot read image {ds.samples[i][0]}: {type(e).__name__}: {str(e)[:200]}",
                            hint="remove or replace the corrupt (or oversized) image") from e
        images.append(x)
        labels.append(names.index(ds.classes[folder_idx].lower()) if labelled else -1)
    tag = "" if labelled else ", unlabelled: folder names are not the model's classes"
    return EvalSet(torch.stack(images), torch.tensor(labels, dtype=torch.long), list(class_names or ds.classes),
                   f"imagefolder:{path}[{n}{tag}]")


def _resize_crop(image, h: int, w: int):
    """torchvision's classification evaluation transform at any size: the shorter side resized to 8/7 of the crop
    (256 for a 224 crop), then the centre ``h x w`` cropped. An image that already has the model's size is kept as it
    is (cropping it would cut a border the model was trained to see)."""
    from torchvision.transforms import functional as TF

    if image.size == (w, h):
        return image
    image = TF.resize(image, round(max(h, w) * 8 / 7))
    return TF.center_crop(image, [h, w])


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000,
             progress: bool = False, desc: str = "evaluate teacher") -> float:
    """Top-1 accuracy (%) of ``model`` on normalised images (a progress bar with ``progress``)."""
    from tqdm.auto import tqdm

    from ..device import module_device

    model.eval()
    dev = module_device(model)
    batch_size = fitting_batch(images.shape[1:], batch_size)
    correct = 0
    with torch.no_grad():
        for i in tqdm(range(0, len(labels), batch_size), desc=desc, disable=not progress, leave=leave_inner_bars()):
            logits = model(images[i : i + batch_size].to(dev))
            correct += (logits.argmax(1).cpu() == labels[i : i + batch_size]).sum().item()
    return 100.0 * correct / max(1, len(labels))
