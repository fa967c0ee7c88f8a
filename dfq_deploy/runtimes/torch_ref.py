"""The PyTorch reference: the Brevitas fake-quant student exactly as trained."""

from __future__ import annotations

import numpy as np
import torch

from .base import Runtime


class TorchRuntime(Runtime):
    """The student in PyTorch. While active, its activation quantizers compute through
    :class:`~dfq_deploy.quant.fused.FusedActivationQuant`: the same values as Brevitas' own path (up to the sign of
    a zero), without its slow ``torch.where`` clamp; the PyTorch evaluation of the main job took 22 s of its
    4 minutes on 2 cores with Brevitas' path (issue 14)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self._fused = None

    def _activate(self) -> None:
        from ..quant.fused import FusedActivationQuant

        self.model.eval()
        self._fused = FusedActivationQuant(self.model)

    def _deactivate(self) -> None:
        if self._fused is not None:
            self._fused.remove()
            self._fused = None

    @torch.no_grad()
    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(x)).float().numpy()
