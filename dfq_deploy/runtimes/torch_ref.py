"""The PyTorch reference: the Brevitas fake-quant student exactly as Brevitas computes it."""

from __future__ import annotations

import numpy as np
import torch

from .base import Runtime


class TorchRuntime(Runtime):
    """The student in PyTorch, through Brevitas' own modules: the same computation as the gate's other views of the
    student (its layer-local capture and its float64 evaluation), so the gate has one reference. The training fast
    path (:mod:`dfq_deploy.quant.fastpath`) is not used here: it gives the same values, but a reference is better
    without a second implementation of the quantizers to trust."""

    name = "torch"

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def _activate(self) -> None:
        self.model.eval()

    @torch.no_grad()
    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(x)).float().numpy()
