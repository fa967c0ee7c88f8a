"""End-to-end parity: a runtime's logits against the reference's on the same images."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ..data import EvalSet
from ..runtimes import Runtime
from ..progress import leave_inner_bars

# the end-to-end defaults of the gate (dfq_deploy.validate.gate.Gate reads them; docs/validate.md says why)
DEFAULT_MIN_AGREEMENT = 98.0
DEFAULT_MAX_ACCURACY_DIFF = 0.5


def run_logits(runtime: Runtime, data: EvalSet, batch_size: int = 500, progress: bool = True) -> np.ndarray:
    """Logits of ``runtime`` on every image of ``data`` (activates and deactivates the runtime)."""
    outs = []
    with runtime:
        for x, _ in tqdm(list(data.batches(batch_size)), desc=f"evaluate {runtime.name}", disable=not progress,
                         leave=leave_inner_bars()):
            outs.append(runtime.infer(x.numpy()))
    return np.concatenate(outs)


@dataclass
class ParityResult:
    """How ``runtime`` compares with ``reference`` end to end; truthy when within the thresholds.

    Gated: top-1 agreement and (with labels) the accuracy difference. Reported, not gated unless ``max_steps`` is set:
    the logit differences in output quantization steps (rounding ties compound with depth, so a correct export can
    be several output steps off; the layer-local check of :mod:`.local` is what tells a tie from a bug).

    ``rounding_baseline``: set by the gate where the reference's own top-1 moves with rounding on these inputs (its
    agreement with its float64 evaluation, or with itself evaluated with the runtime's rounding ties as
    ``rounding_source`` says, %); ``min_agreement`` and ``max_accuracy_diff`` are then that baseline's,
    widened by the gate's tolerance (:func:`dfq_deploy.validate.gate.check_parity`)."""

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
    mean_diff_steps: float | None
    min_agreement: float
    max_accuracy_diff: float
    max_steps: float | None = None
    step_histogram: dict[str, int] | None = None
    per_class_accuracy: dict[str, float] | None = None
    confusion: list[list[int]] | None = field(default=None, repr=False)
    rounding_baseline: float | None = None
    rounding_source: str | None = None   # what the reference was evaluated as for the baseline (None: float64)

    @property
    def accuracy_diff(self) -> float | None:
        if self.accuracy is None or self.reference_accuracy is None:
            return None
        return round(abs(self.reference_accuracy - self.accuracy), 4)

    def failures(self) -> list[str]:
        """Why this runtime fails the gate (empty when it passes)."""
        out = []
        beyond = ("" if self.rounding_baseline is None else
                  f" (the reference agrees with {self.rounding_source or 'its own float64 evaluation'} on only "
                  f"{self.rounding_baseline:.3f} % of "
                  "these inputs; the threshold is that, less the gate's tolerance): more than rounding explains")
        if self.top1_agreement < self.min_agreement:
            out.append(f"{self.runtime}: top-1 agreement {self.top1_agreement:.3f} % < {self.min_agreement} %"
                       + beyond)
        drop = self.accuracy_diff
        if drop is not None and drop > self.max_accuracy_diff:
            out.append(f"{self.runtime}: accuracy {self.accuracy:.2f} % vs the reference's "
                       f"{self.reference_accuracy:.2f} % (> {self.max_accuracy_diff} pt apart){beyond}")
        if self.max_steps is not None and self.max_diff_steps is not None and self.max_diff_steps > self.max_steps:
            out.append(f"{self.runtime}: logits {self.max_diff_steps} output steps off (> {self.max_steps})")
        return out

    def __bool__(self) -> bool:
        return not self.failures()

    @property
    def passed(self) -> bool:
        return bool(self)

    def to_dict(self) -> dict:
        return {**asdict(self), "accuracy_diff": self.accuracy_diff, "passed": self.passed}


def _accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    return float(100.0 * (logits.argmax(1) == labels).mean())


def compare_logits(reference: np.ndarray, other: np.ndarray, labels: np.ndarray | None = None, *,
                   runtime: str = "runtime", reference_name: str = "torch", output_step: float | None = None,
                   min_agreement: float = DEFAULT_MIN_AGREEMENT,
                   max_accuracy_diff: float = DEFAULT_MAX_ACCURACY_DIFF, max_steps: float | None = None,
                   class_names=()) -> ParityResult:
    """Compare two ``N x classes`` logit arrays.

    Args:
        output_step: the quantization step of the logits (scale of the last DequantizeLinear); differences are also
            reported in steps.
        min_agreement: pass threshold on top-1 agreement (%).
        max_accuracy_diff: pass threshold on the accuracy difference to the reference (points; with labels).
        max_steps: optional pass threshold on the largest difference in output steps (None: reported only).
    """
    if reference.shape != other.shape:
        raise ValueError(f"logit shapes differ: {reference.shape} vs {other.shape}")
    diff = np.abs(reference.astype(np.float64) - other.astype(np.float64))
    max_diff = float(diff.max()) if diff.size else 0.0
    histogram = per_class = confusion = None
    if output_step:
        steps = np.round(diff / output_step).astype(np.int64).ravel()
        histogram = {str(k): int(v) for k, v in zip(*np.unique(steps, return_counts=True), strict=True)}
    if labels is not None:
        pred = other.argmax(1)
        per_class = {str(class_names[c]) if c < len(class_names) else str(c): float((pred[labels == c] == c).mean()
                                                                                      * 100)
                     for c in np.unique(labels)}
        n = max(len(class_names), int(labels.max()) + 1, int(pred.max()) + 1)
        cm = np.zeros((n, n), np.int64)
        np.add.at(cm, (labels, pred), 1)
        confusion = cm.tolist()
    return ParityResult(
        runtime=runtime, reference=reference_name, samples=int(reference.shape[0]),
        accuracy=_accuracy(other, labels), reference_accuracy=_accuracy(reference, labels),
        top1_agreement=float(100.0 * (reference.argmax(1) == other.argmax(1)).mean()),
        max_abs_diff=max_diff, mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        output_step=output_step, max_diff_steps=round(max_diff / output_step, 3) if output_step else None,
        mean_diff_steps=float(diff.mean() / output_step) if output_step and diff.size else None,
        min_agreement=min_agreement, max_accuracy_diff=max_accuracy_diff, max_steps=max_steps,
        step_histogram=histogram, per_class_accuracy=per_class, confusion=confusion,
    )
