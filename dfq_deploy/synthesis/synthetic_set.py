"""A synthetic image set on disk (safetensors): synthesised once, reused for PTQ calibration and QAT of other
models. Loading never unpickles anything and checks shapes and dtypes before use."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import DataError
from ..files import atomic_path

FORMAT = "dfq-deploy synthetic set v1"


def save_synthetic_set(path: str | Path, images: torch.Tensor, labels: torch.Tensor | None, meta: dict) -> Path:
    """Write ``images`` (N x C x H x W float, normalised as the teacher expects) and ``labels`` atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"images": images.detach().float().cpu().contiguous()}
    if labels is not None:
        tensors["labels"] = labels.detach().long().cpu().contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "meta": json.dumps(meta)})
    return path


def load_synthetic_set(path: str | Path, img_shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                                     dict]:
    """Read a set written by :func:`save_synthetic_set`; raises DataError when it is not one or does not fit."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"synthetic set {path} does not exist", hint="give the synthetic_set.safetensors of a LIS run")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            keys = set(f.keys())
            images = f.get_tensor("images") if "images" in keys else None
            labels = f.get_tensor("labels") if "labels" in keys else None
    except Exception as e:  # noqa: BLE001 - any parse failure means "not a safetensors file"
        raise DataError(f"{path} is not a safetensors file ({e})",
                        hint="give the synthetic_set.safetensors written by a LIS run") from None
    if header.get("format") != FORMAT or images is None:
        raise DataError(f"{path} is not a dfq-deploy synthetic set",
                        hint="give the synthetic_set.safetensors written by a LIS run")
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(img_shape) or not images.is_floating_point():
        raise DataError(f"synthetic set {path} holds images of shape {tuple(images.shape[1:])}, but the teacher "
                        f"expects {tuple(img_shape)}", hint="synthesise a set from a teacher with this input shape")
    if labels is not None and (labels.shape != (images.shape[0],) or labels.dtype != torch.int64):
        raise DataError(f"synthetic set {path} has labels that do not match its images")
    return images.float(), labels, json.loads(header.get("meta", "{}"))
