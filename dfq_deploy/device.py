"""Where training runs: ``--device auto|cpu|cuda|cuda:N``.

Random numbers are always drawn on the CPU from the recipes' own seeded generators and then moved to the device, so
a CUDA run draws the same noise, images and dropout masks as a CPU run of the same seed (its arithmetic differs in
the last bits, as GPU kernels do), and a CPU run is bit-identical to what it was before devices existed.
"""

from __future__ import annotations

import re

import torch

from .errors import ConfigError, RuntimeUnavailableError

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` for a user's ``--device`` value.

    Raises:
        ConfigError: the value is not one of auto, cpu, cuda, cuda:N (exit 2).
        RuntimeUnavailableError: CUDA was asked for and this machine has none, or not that many GPUs (exit 6).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d{1,3}))?", text)
    if not m:
        raise ConfigError(f"--device {spec!r} is not a device", hint=f"use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise RuntimeUnavailableError(f"--device {text}: this machine has no CUDA GPU that PyTorch can use "
                                      f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})",
                                      hint="use --device cpu (or auto), or install a CUDA build of torch on a GPU "
                                           "machine")
    index = int(m.group(1)) if m.group(1) is not None else None
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise RuntimeUnavailableError(f"--device {text}: this machine has {count} CUDA device(s) (0..{count - 1})",
                                      hint=f"use --device cuda:0 ... cuda:{count - 1}")
    return torch.device("cuda", index if index is not None else torch.cuda.current_device())


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module that has neither)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    """A readable name for reports: ``cpu`` or ``cuda:0 (NVIDIA H200)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
