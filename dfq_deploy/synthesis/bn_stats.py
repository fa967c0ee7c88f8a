"""BatchNorm-statistics matching: the batch statistics a teacher sees should equal its stored running statistics."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


MODES = ("mse", "gauss_kl")


class _ChannelMoments(torch.autograd.Function):
    """Per-channel ``E[x]`` and ``E[x^2]`` of an (N, C, ...) tensor over every dimension but C, with a one-pass
    backward (``g_mean / n + x * 2 g_sq / n``, one fused multiply-add over x) instead of autograd's expand, divide,
    multiply and add chain of ``x.mean()`` and ``(x * x).mean()``: those were about a fifth of a ZeroQ step."""

    @staticmethod
    def forward(ctx, x):
        dims = [0] + list(range(2, x.dim()))
        ctx.save_for_backward(x)
        return x.mean(dims), (x * x).mean(dims)

    @staticmethod
    def backward(ctx, g_mean, g_sq):
        (x,) = ctx.saved_tensors
        n = x.numel() // x.shape[1]
        view = (1, -1) + (1,) * (x.dim() - 2)
        g_mean = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device) if g_mean is None else g_mean
        g_sq = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device) if g_sq is None else g_sq
        return torch.addcmul((g_mean / n).view(view), x, (g_sq * (2.0 / n)).view(view))


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
        # E[x^2] - E[x]^2 rather than x.var(): torch's var over (N, H, W) of an NCHW tensor is a slow strided
        # reduction, a large share of a ZeroQ step; this form is much faster and agrees with var() to float32
        # rounding (docs/benchmarks.md)
        mean, sq = _ChannelMoments.apply(x)
        var = (sq - mean * mean).clamp_min(0)
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


@contextlib.contextmanager
def affine_batchnorm(*models: nn.Module):
    """While active, every BatchNorm of ``models`` that is in eval mode with running statistics computes its output
    as one per-channel multiply-add, ``x * a + b`` with ``a = weight / sqrt(running_var + eps)`` and
    ``b = bias - running_mean * a``, taken once (detached: for frozen models, e.g. a teacher that only judges
    images). Forward hooks still see the BatchNorm's input, so :class:`BNStatsLoss` works unchanged. A BatchNorm put
    back in training mode meanwhile takes its own path.

    Why: in eval mode BatchNorm is that affine map, but torch's kernel computes it with a general forward and a
    backward that costs several times the multiply-add's, a visible share of a ZeroQ step (docs/benchmarks.md).
    Outputs agree to float32 rounding."""
    patched = []
    seen: set[int] = set()
    for model in models:
        for m in model.modules():
            if id(m) in seen or not isinstance(m, nn.modules.batchnorm._BatchNorm) or m.training or \
                    m.running_mean is None or m.running_var is None or "forward" in vars(m):
                continue
            seen.add(id(m))
            with torch.no_grad():
                a = torch.rsqrt(m.running_var + m.eps)
                if m.weight is not None:
                    a = a * m.weight
                b = -m.running_mean * a + (m.bias if m.bias is not None else 0.0)
            m.forward = _affine_forward(m, a.detach(), b.detach())
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def _affine_forward(module: nn.Module, a: torch.Tensor, b: torch.Tensor):
    def forward(x):
        if module.training:
            return type(module).forward(module, x)
        view = (1, -1) + (1,) * (x.dim() - 2)
        return torch.addcmul(b.view(view), x, a.view(view))
    return forward
