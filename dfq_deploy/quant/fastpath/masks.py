"""QDrop's random keep-masks and the mix of quantized and unquantized values, shared by block reconstruction
(``quant.reconstruct``) and its lean training forward (:mod:`.block`).

Plain torch, no Brevitas internals, so not behind the version guard: the masks are QDrop's random stream itself, and
every path (the fast one and Brevitas' own) draws them here, in the same order."""

from __future__ import annotations

import math

import torch


_BYTE_BITS = ((torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1).float()  # row b: the 8 bits of b, low first


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, rng: torch.Generator) -> torch.Tensor:
    """A float32 mask of 0 and 1, each element 1 with probability ``p`` (rounded to a multiple of 2**-16), all
    independent, on the CPU.

    QDrop draws a mask over every activation of every step, so this is built for speed (docs/benchmarks.md):

    - *Bit-sliced.* With ``p = 0.b1 b2 ... bm`` in binary, an element is 1 when a uniform ``U = 0.u1 u2 ...`` is
      below ``p``: decided at the first digit where ``u`` and ``b`` differ, false if the first ``m`` agree. This is
      computed 56 elements at a time on 64-bit words of random bits, one word of bits per element and digit. So it
      takes ``m`` random bits per element, not 16: one for QDrop's usual ``p = 0.5`` (16 for an awkward ``p``).
    - Each 64-bit draw gives 56 bits: its low 7 bytes (``random_`` draws in [0, 2**63); its top byte is not full).
    - *Float, not bool.* The bytes become 0/1 floats through a 256-row table. On the CPU, writing a bool tensor,
      and every operation that mixes one with floats (``torch.where``, a multiply), takes torch's slow path, several
      times slower than a float operation of the same size. QDrop mixes with :func:`keep_lerp` instead."""
    n = math.prod(shape)
    k = int(round(p * 65536))
    if k >= 65536:
        return torch.ones(shape)
    if k <= 0:
        return torch.zeros(shape)
    digits = [(k >> (15 - i)) & 1 for i in range(16)]
    m = max(i for i, d in enumerate(digits) if d) + 1  # digits past the last 1 cannot make U < p
    words = (n + 55) // 56
    planes = torch.empty((m, words), dtype=torch.int64).random_(generator=rng)  # bits 0-62 uniform
    if m == 1:  # p = 0.5: U < p exactly when U's first digit is 0 (the loop below, without its bookkeeping)
        below = torch.bitwise_not(planes[0])
    else:
        below = torch.zeros(words, dtype=torch.int64)  # U < p decided
        tied = torch.full((words,), -1, dtype=torch.int64)  # digits so far equal
        for digit, u in zip(digits[:m], planes):
            if digit:
                below |= tied & ~u
                tied &= u
            else:
                tied &= ~u
    low7 = below.view(torch.uint8).view(words, 8)[:, :7].reshape(-1).long()  # little-endian: bytes 0-6 = bits 0-55
    return torch.index_select(_BYTE_BITS, 0, low7).view(-1)[:n].view(shape)


class _KeepMix(torch.autograd.Function):
    """``torch.lerp(quantized, unquantized, keep)`` for a 0/1 ``keep``, with a leaner backward: the unquantized
    input's gradient is ``grad * keep`` and the quantized input's ``grad - grad * keep``. Torch's own lerp backward
    builds ``1 - keep`` (a fill and a subtraction over the whole tensor) and multiplies twice: four full passes
    instead of two. The values are the same (``grad * (1 - keep)`` with ``keep`` 0 or 1 is ``grad`` or a zero,
    as is ``grad - grad * keep``; only the sign of a zero can differ)."""

    @staticmethod
    def forward(ctx, quantized, unquantized, keep):
        ctx.save_for_backward(keep)
        return torch.lerp(quantized, unquantized, keep)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        g_unquantized = grad * keep
        g_quantized = grad - g_unquantized if ctx.needs_input_grad[0] else None
        return g_quantized, (g_unquantized if ctx.needs_input_grad[1] else None), None


def keep_lerp(quantized: torch.Tensor, unquantized: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``unquantized`` where ``keep`` is 1, ``quantized`` where it is 0 (QDrop's mix), with both gradients.

    ``torch.lerp`` is exact at weights 0 and 1 (it computes ``start + w * (end - start)`` below 0.5 and
    ``end - (end - start) * (1 - w)`` above), so this equals ``torch.where(keep.bool(), unquantized, quantized)``
    (bit for bit but for the sign of a zero) in one float pass, instead of the bool path of ``where``."""
    keep = keep.to(quantized.device)
    if torch.is_grad_enabled() and (quantized.requires_grad or unquantized.requires_grad):
        return _KeepMix.apply(quantized, unquantized, keep)
    return torch.lerp(quantized, unquantized, keep)
