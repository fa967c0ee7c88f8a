"""BatchNorm-statistics matching: the batch statistics a teacher sees should equal its stored running statistics."""

from __future__ import annotations

import torch
from torch import nn


class BNStatsLoss:
    """Forward hooks on every BatchNorm of ``model``; :meth:`loss` is the mean over layers of
    ``MSE(batch_mean, running_mean) + MSE(batch_var, running_var)`` for the last forward pass.

    Use as a context manager so the hooks are removed afterwards.
    """

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._terms: list[torch.Tensor] = []
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.Module, inputs, output) -> None:
        x = inputs[0]
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        self._terms.append(nn.functional.mse_loss(mean, module.running_mean) +
                           nn.functional.mse_loss(var, module.running_var))

    def reset(self) -> None:
        self._terms = []

    def loss(self) -> torch.Tensor:
        assert self._terms, "run a forward pass of the hooked model first"
        out = torch.stack(self._terms).mean()
        self._terms = []
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "BNStatsLoss":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
