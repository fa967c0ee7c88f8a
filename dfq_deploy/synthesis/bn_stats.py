"""BatchNorm-statistics matching: the batch statistics a teacher sees should equal its stored running statistics."""

from __future__ import annotations

import torch
from torch import nn


MODES = ("mse", "gauss_kl")


class BNStatsLoss:
    """Forward hooks on every BatchNorm of ``model``; :meth:`loss` is the mean over layers of the distance between
    the batch statistics of the last forward pass and the layer's running statistics:

    - ``mode="mse"`` (GDFQ, DFQF, ZeroQ): ``MSE(batch_mean, running_mean) + MSE(batch_var, running_var)``;
    - ``mode="gauss_kl"`` (Choi et al.): per-channel ``KL(N(batch) || N(running))`` of the two Gaussians, averaged.

    Use as a context manager so the hooks are removed afterwards.
    """

    def __init__(self, model: nn.Module, mode: str = "mse"):
        if mode not in MODES:
            raise ValueError(f"BN-statistics mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._terms: list[torch.Tensor] = []
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.Module, inputs, output) -> None:
        x = inputs[0]
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims)
        # E[x^2] - E[x]^2 rather than x.var(): torch's var over (N, H, W) of an NCHW tensor is a slow strided
        # reduction. Measured on the shipped teacher's ZeroQ step (batch 128, 2 threads): var took 20 % of the step;
        # this form is 4.9x faster forward, 1.7x forward + backward, and agrees with var() to 2e-6 (float32)
        var = ((x * x).mean(dims) - mean * mean).clamp_min(0)
        if self.mode == "mse":
            self._terms.append(nn.functional.mse_loss(mean, module.running_mean) +
                               nn.functional.mse_loss(var, module.running_var))
        else:
            eps = module.eps
            rv, bv = module.running_var + eps, var + eps
            kl = 0.5 * (torch.log(rv / bv) + (bv + (mean - module.running_mean) ** 2) / rv - 1)
            self._terms.append(kl.mean())

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
