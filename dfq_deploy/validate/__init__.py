"""Parity between runtimes: accuracy, top-1 agreement and logit differences in output quantization steps."""

from .parity import ParityResult, compare_logits, run_logits

__all__ = ["ParityResult", "compare_logits", "run_logits"]
