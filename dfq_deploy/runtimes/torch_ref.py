"""The PyTorch reference: the Brevitas fake-quant student exactly as trained."""

from __future__ import annotations

import numpy as np
import torch

from .base import Runtime


class TorchRuntime(Runtime):
    name = "torch"

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def _activate(self) -> None:
        self.model.eval()

    @torch.no_grad()
    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(x)).float().numpy()
