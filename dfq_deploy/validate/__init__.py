"""Parity between runtimes: the gate (layer-local check, end-to-end agreement, integer census) and its reports."""

from .gate import Gate, GateResult, check_parity
from .local import LocalResult, check_layers
from .parity import ParityResult, compare_logits, run_logits

__all__ = ["Gate", "GateResult", "LocalResult", "ParityResult", "check_layers", "check_parity", "compare_logits",
           "run_logits"]
