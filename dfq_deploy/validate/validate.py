"""``dfq-deploy validate``: every available runtime on the same inputs, compared with the PyTorch reference.

Per runtime: accuracy (when labels exist), top-1 agreement with the reference, max and mean logit difference in
output quantization steps, per-class accuracy. The gate (defaults: agreement >= 99.9 %, <= 1 step) fails with
:class:`~dfq_deploy.errors.ParityError` (exit code 7). When a runtime fails it and the PyTorch model is at hand,
the first quantized activation that diverges is located (:mod:`.divergence`). Reports: ``validation.json`` and a
self-contained ``validation.html`` (figures embedded).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ParityError
from .parity import compare_logits, run_logits

RUNTIME_NAMES = ("torch", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class ValidateConfig:
    target: str                                   # run directory (train-export) or an .onnx file
    runtimes: tuple[str, ...] = RUNTIME_NAMES     # those missing here are reported as skipped, with the reason
    data: str = "fashion-mnist"                   # fashion-mnist | imagefolder:PATH | synthetic
    limit: int | None = None                      # first N images only
    data_root: str | None = None
    min_agreement: float = 99.9                   # gate: top-1 agreement with the reference (%)
    max_steps: float = 1.0                        # gate: largest logit difference in output quantization steps
    out: str | None = None                        # report folder; default: the run directory / beside the .onnx
    divergence_samples: int = 64                  # images used to locate the first diverging layer
    threads: int | None = None
    progress: bool = True

    def __post_init__(self):
        bad = [r for r in self.runtimes if r not in RUNTIME_NAMES]
        if bad or not self.runtimes:
            raise ConfigError(f"unknown runtime(s) {bad}", hint=f"use a comma-separated subset of {RUNTIME_NAMES}")
        if not 0 <= self.min_agreement <= 100 or self.max_steps < 0:
            raise ConfigError("min_agreement must be in [0, 100] and max_steps >= 0")


def _metadata(onnx_path: Path) -> dict:
    from ..export.load import load_onnx_safely

    meta = {p.key: p.value for p in load_onnx_safely(onnx_path).metadata_props}
    out = {}
    for key in ("input_shape", "mean", "std", "class_names"):
        if f"dfq_deploy.{key}" in meta:
            out[key] = json.loads(meta[f"dfq_deploy.{key}"])
    out["profile"] = meta.get("dfq_deploy.profile")
    return out


def compare_runtimes(reference_name: str, reference: np.ndarray, outputs: dict[str, np.ndarray], labels, *,
                     output_step: float | None, min_agreement: float, max_steps: float | None,
                     class_names) -> dict[str, dict]:
    """Parity of each runtime's logits with ``reference``, plus per-class accuracy and the step histogram."""
    rows = {}
    for name, logits in outputs.items():
        p = compare_logits(reference, logits, labels, runtime=name, reference_name=reference_name,
                           output_step=output_step, min_agreement=min_agreement, max_steps=max_steps).to_dict()
        diff = np.abs(reference.astype(np.float64) - logits.astype(np.float64))
        p["mean_diff_steps"] = float(diff.mean() / output_step) if output_step else None
        steps = np.round(diff / output_step).astype(np.int64).ravel() if output_step else None
        p["step_histogram"] = ({str(k): int(v) for k, v in zip(*np.unique(steps, return_counts=True), strict=True)}
                               if steps is not None else None)
        if labels is not None:
            pred = logits.argmax(1)
            p["per_class_accuracy"] = {str(class_names[c]) if c < len(class_names) else str(c):
                                       float((pred[labels == c] == c).mean() * 100)
                                       for c in np.unique(labels)}
            n = max(len(class_names), int(labels.max()) + 1, int(pred.max()) + 1)
            cm = np.zeros((n, n), np.int64)
            np.add.at(cm, (labels, pred), 1)
            p["confusion"] = cm.tolist()
        rows[name] = p
    return rows


def validate(cfg: ValidateConfig) -> dict:
    """Run the validation described in the module docstring; return the report (also written to disk).

    Raises:
        ConfigError / DataError / ModelError: bad target, data or model.
        ParityError: a runtime fails the gate (the reports are written first).
    """
    import torch

    from ..data import load_eval_set
    from ..runtimes import find_runtime, get_runtime

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    target = Path(cfg.target)
    student, history, run_report = None, [], None
    if target.is_dir():
        from ..rundir import load_run

        onnx_path = target / "model.onnx"
        if not onnx_path.is_file():
            raise ConfigError(f"{target} has no model.onnx", hint="pass a train-export run directory or an .onnx file")
        student, _, run_report = load_run(target)
        history = run_report.get("history", [])
        out_dir = Path(cfg.out) if cfg.out else target
    elif target.is_file():
        onnx_path = target
        out_dir = Path(cfg.out) if cfg.out else target.parent
    else:
        raise ConfigError(f"{target} not found", hint="pass a train-export run directory or an .onnx file")
    meta = _metadata(onnx_path)
    if "input_shape" not in meta:
        raise ConfigError(f"{onnx_path} has no dfq-deploy metadata (input shape, normalisation)",
                          hint="validate models exported by dfq-deploy")
    data = load_eval_set(cfg.data, meta.get("mean", [0.0]), meta.get("std", [1.0]), limit=cfg.limit,
                         root=cfg.data_root, input_shape=meta["input_shape"], class_names=meta.get("class_names"))
    if tuple(data.images.shape[1:]) != tuple(meta["input_shape"]):
        raise ConfigError(f"evaluation images are {tuple(data.images.shape[1:])} but the model expects "
                          f"{tuple(meta['input_shape'])}", hint="pick evaluation data that matches the model")
    if student is not None:
        reference_name = "torch"
        reference = run_logits(get_runtime("torch")(student), data, progress=cfg.progress)
    else:  # no PyTorch model: the graph's own semantics, unoptimised
        reference_name = "onnx (unoptimised reference)"
        reference = run_logits(get_runtime("onnxruntime")(onnx_path, threads=cfg.threads, optimize=False), data,
                               progress=cfg.progress)
    outputs, skipped = {}, {}
    for name in cfg.runtimes:
        if name == "torch":
            if student is None:
                skipped[name] = "no PyTorch model next to a bare .onnx (pass the run directory)"
            continue  # the reference itself
        cls, reason = find_runtime(name)
        if cls is None:
            skipped[name] = reason
        else:
            rt = cls(onnx_path, threads=cfg.threads) if name == "onnxruntime" else cls(onnx_path)
            outputs[name] = run_logits(rt, data, progress=cfg.progress)
    report = build_report(reference_name, reference, outputs, skipped, data, onnx_path, student,
                          min_agreement=cfg.min_agreement, max_steps=cfg.max_steps, profile=meta.get("profile"),
                          divergence_samples=cfg.divergence_samples, threads=cfg.threads)
    failed = [n for n, r in report["runtimes"].items() if not r["passed"]]
    write_reports(out_dir, report, history)
    if failed:
        raise ParityError(failure_message(report, out_dir / "validation.html"),
                          hint="look at the report's first diverging layer; integer kernels may differ by one "
                               "step on rounding ties")
    return report


def failure_message(report: dict, html_path: Path) -> str:
    failed = [n for n, r in report["runtimes"].items() if not r["passed"]]
    gate = report["gate"]
    parts = []
    for n in failed:
        r = report["runtimes"][n]
        parts.append(f"{n}: agreement {r['top1_agreement']:.3f} %, max {r['max_diff_steps']} steps")
    where = ""
    div = report.get("divergence")
    if div and div["first"]:
        f = div["first"]
        where = f"; first diverging layer: {f['node']} ({f['module']}), {f['max_steps']:.1f} steps, shape {f['shape']}"
    return (f"parity gate failed (agreement >= {gate['min_agreement']} %, <= {gate['max_steps']} output steps): "
            f"{'; '.join(parts)}{where}; report: {html_path}")


def build_report(reference_name: str, reference: np.ndarray, outputs: dict[str, np.ndarray], skipped: dict,
                 data, onnx_path: Path, student=None, *, min_agreement: float, max_steps: float,
                 profile: str | None = None, divergence_samples: int = 64, threads: int | None = None) -> dict:
    """The validation report for logits already computed; locates the first divergence when a gate fails."""
    from ..export.inspect import output_quant_step

    labels = data.labels.numpy() if data.labelled else None
    step = output_quant_step(onnx_path)
    rows = compare_runtimes(reference_name, reference, outputs, labels, output_step=step,
                            min_agreement=min_agreement, max_steps=max_steps, class_names=data.class_names)
    divergence = None
    failed = [n for n, r in rows.items() if not r["passed"]]
    if failed and student is not None:
        from .divergence import first_divergence, layer_diffs

        worst = np.argsort(-np.abs(reference - outputs[failed[0]]).max(1))[:divergence_samples]
        diffs = layer_diffs(student, onnx_path, data.images[np.sort(worst)].numpy(), threads=threads)
        first = first_divergence(diffs, max_steps)
        divergence = {"first": first.to_dict() if first else None, "layers": [d.to_dict() for d in diffs],
                      "samples": len(worst)}
    return {
        "model": str(onnx_path), "profile": profile, "data": data.name, "samples": len(data),
        "labelled": labels is not None, "reference": reference_name,
        "reference_accuracy": float((reference.argmax(1) == labels).mean() * 100) if labels is not None else None,
        "output_step": step, "gate": {"min_agreement": min_agreement, "max_steps": max_steps},
        "runtimes": rows, "skipped": skipped, "divergence": divergence, "passed": not failed,
        "class_names": list(data.class_names),
    }


def write_reports(out_dir: Path, report: dict, history: list[dict]) -> None:
    """``validation.json`` and ``validation.html`` in ``out_dir``, each written atomically."""
    from .html_report import render_html

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("validation.json", json.dumps(report, indent=2) + "\n"),
                       ("validation.html", render_html(report, history))):
        tmp = out_dir / f".{name}.tmp{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)
