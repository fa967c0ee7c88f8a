"""The CPU fast path of training: Brevitas' own computations, bit for bit, with less work per step.

Every use of Brevitas' private internals (private classes such as ``_NoDelay``, instance ``forward`` replacements on
its quantizers, the order of its operations replayed outside its modules) lives in this package:

- :class:`FusedActivationQuant` (:mod:`.activation`): the activation fake-quantization as one autograd function;
- :class:`LeanBlock` (:mod:`.block`): a reconstruction block's training forward on plain tensors;
- :func:`cache_learned_rounding` (:mod:`.rounding`): AdaRound's weight quantizer with its frozen parts computed once;
- :func:`keep_mask` / :func:`keep_lerp` (:mod:`.masks`): QDrop's masks and mix (plain torch, used by every path).

Its contract is ``tests/quant/test_fastpath.py``: each part gives the values and gradients of Brevitas' own path, bit
for bit. It is used only with the Brevitas versions that contract was run against (:mod:`.guard`); with another one
each part declines (patches nothing, builds nothing) and the work goes through Brevitas' modules. The fast path is
for training speed only: the parity reference (``runtimes.torch_ref``) and the gate evaluate the student through
Brevitas' own path.
"""

from .activation import FusedActivationQuant, is_act_quant
from .block import LeanBlock
from .guard import CHECKED_BREVITAS, enabled
from .masks import keep_lerp, keep_mask
from .rounding import cache_learned_rounding, has_cached_rounding, uncache

__all__ = ["FusedActivationQuant", "is_act_quant", "LeanBlock", "CHECKED_BREVITAS", "enabled", "keep_lerp",
           "keep_mask", "cache_learned_rounding", "has_cached_rounding", "uncache"]
