"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (gzip IDX files).

torchvision's ``FashionMNIST`` dataset insists on its own ``<root>/FashionMNIST/raw`` layout with unpacked files and
would try to download; Debian ships the original ``.gz`` files in a read-only folder, so we read IDX directly
(a 16/8-byte header plus raw uint8 values, format from the dataset's README).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: Path, expected_magic: int, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}", hint="reinstall dataset-fashion-mnist") from e
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated", hint="reinstall dataset-fashion-mnist")
    magic, *dims = struct.unpack(f">{1 + ndim}I", data[:header])
    if magic != expected_magic or len(data) != header + int(np.prod(dims)):
        raise DataError(f"{path} is not a valid IDX file (magic {magic:#x}, dims {dims})",
                        hint="reinstall dataset-fashion-mnist")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(split: str = "test", root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a Fashion-MNIST split.

    Args:
        split: ``"test"`` (10k images, evaluation) or ``"train"`` (60k images, used only to pretrain the teacher).
        root: folder holding the four ``*-ubyte.gz`` files; defaults to Debian's install location.

    Returns:
        ``(images, labels)``: uint8 tensor ``N x 1 x 28 x 28`` and int64 tensor ``N``.

    Raises:
        DataError: the files are missing or malformed.
    """
    if split not in _FILES:
        raise DataError(f"unknown Fashion-MNIST split {split!r}", hint="use 'train' or 'test'")
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    img_name, lbl_name = _FILES[split]
    img_path, lbl_path = root / img_name, root / lbl_name
    for p in (img_path, lbl_path):
        if not p.is_file():
            raise DataError(
                f"Fashion-MNIST file {p} not found",
                hint="install it with `sudo apt-get install dataset-fashion-mnist` (or pass the folder that holds it)",
            )
    images = _read_idx(img_path, 0x803, 3)
    labels = _read_idx(lbl_path, 0x801, 1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{img_path} has {images.shape[0]} images but {lbl_path} has {labels.shape[0]} labels")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
