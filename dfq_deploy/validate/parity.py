"""Compare a runtime's logits with the PyTorch reference on the same inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from ..data import EvalSet
from ..runtimes import Runtime


def run_logits(runtime: Runtime, data: EvalSet, batch_size: int = 500, progress: bool = True) -> np.ndarray:
    """Logits of ``runtime`` on every image of ``data`` (activates and deactivates the runtime)."""
    outs = []
    with runtime:
        for x, _ in tqdm(list(data.batches(batch_size)), desc=f"evaluate {runtime.name}", disable=not progress,
                         leave=False):
            outs.append(runtime.infer(x.numpy()))
    return np.concatenate(outs)


@dataclass
class ParityResult:
    """How ``runtime`` compares with ``reference``; truthy when within the thresholds."""

    runtime: str
    reference: str
    samples: int
    accuracy: float | None
    reference_accuracy: float | None
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    output_step: float | None
    max_diff_steps: float | None
    min_agreement: float
    max_steps: float | None

    def __bool__(self) -> bool:
        ok = self.top1_agreement >= self.min_agreement
        if self.max_steps is not None and self.max_diff_steps is not None:
            ok = ok and self.max_diff_steps <= self.max_steps
        return ok

    @property
    def passed(self) -> bool:
        return bool(self)

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def _accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    return float(100.0 * (logits.argmax(1) == labels).mean())


def compare_logits(reference: np.ndarray, other: np.ndarray, labels: np.ndarray | None = None, *,
                   runtime: str = "runtime", reference_name: str = "torch", output_step: float | None = None,
                   min_agreement: float = 99.9, max_steps: float | None = None) -> ParityResult:
    """Compare two ``N x classes`` logit arrays.

    Args:
        output_step: the quantization step of the logits (scale of the last DequantizeLinear); differences are also
            reported in steps, because integer kernels may legitimately differ by one step on rounding ties.
        min_agreement: pass threshold on top-1 agreement (%).
        max_steps: pass threshold on the largest difference in output steps (None: not gated).
    """
    assert reference.shape == other.shape, f"logit shapes differ: {reference.shape} vs {other.shape}"
    diff = np.abs(reference.astype(np.float64) - other.astype(np.float64))
    max_diff = float(diff.max()) if diff.size else 0.0
    steps = (max_diff / output_step) if output_step else None
    return ParityResult(
        runtime=runtime, reference=reference_name, samples=int(reference.shape[0]),
        accuracy=_accuracy(other, labels), reference_accuracy=_accuracy(reference, labels),
        top1_agreement=float(100.0 * (reference.argmax(1) == other.argmax(1)).mean()),
        max_abs_diff=max_diff, mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        output_step=output_step, max_diff_steps=None if steps is None else round(steps, 3),
        min_agreement=min_agreement, max_steps=max_steps,
    )
