"""``dfq-deploy validate``: every available runtime on the same inputs, compared with the PyTorch reference.

Per runtime: accuracy (when labels exist), top-1 agreement with the reference, max and mean logit difference in
output quantization steps, per-class accuracy; per quantized activation of the graph, the layer-local comparison;
with the onnxruntime profile, the integer-kernel census. The gate (:mod:`.gate`) fails with
:class:`~dfq_deploy.errors.ParityError` (exit code 7), naming the first faulty layer. Reports: ``validation.json``
and a self-contained ``validation.html`` (figures embedded).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelError, RuntimeUnavailableError
from ..files import atomic_write, file_sha256
from .gate import Gate, check_parity, raise_for_gate
from .parity import run_logits

RUNTIME_NAMES = ("torch", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class ValidateConfig:
    target: str                                   # run directory (train-export) or an .onnx file
    runtimes: tuple[str, ...] = RUNTIME_NAMES     # those missing here are reported as skipped, with the reason
    data: str = "fashion-mnist"                   # fashion-mnist | imagefolder:PATH | synthetic
    limit: int | None = None                      # first N images only
    data_root: str | None = None
    gate: Gate = Gate()                           # thresholds (the same defaults as train-export's)
    out: str | None = None                        # report folder; default: the run directory / beside the .onnx
    threads: int | None = None
    progress: bool = True
    engine: str | None = None                     # TensorRT plan (dfq-deploy compile) for the tensorrt runtime
    emulate_cpu: str | None = None                # qemu CPU model (Haswell) that ONNX Runtime runs on, x86 hosts

    def __post_init__(self):
        for name in ("limit", "threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name}={v!r} must be a whole number >= 1", hint=f"e.g. --{name} 1000")
        if self.emulate_cpu is not None:
            from ..runtimes.emulated import EMULATED_CPUS

            if self.emulate_cpu not in EMULATED_CPUS:
                raise ConfigError(f"emulate_cpu={self.emulate_cpu!r} is not a CPU model this tool emulates",
                                  hint=f"use one of {', '.join(EMULATED_CPUS)}")
        bad = [r for r in self.runtimes if r not in RUNTIME_NAMES]
        if bad or not self.runtimes:
            raise ConfigError(f"unknown runtime(s) {bad}", hint=f"use a comma-separated subset of {RUNTIME_NAMES}")


def _metadata(onnx_path: Path) -> dict:
    from ..export.load import load_onnx_safely
    from ..models.zoo import input_spec_problems

    meta = {p.key: p.value for p in load_onnx_safely(onnx_path).metadata_props}
    out = {}
    hint = "re-export the model with `dfq-deploy export RUN_DIR`, or validate the run directory"
    for key in ("input_shape", "mean", "std", "class_names"):
        if f"dfq_deploy.{key}" in meta:
            try:
                out[key] = json.loads(meta[f"dfq_deploy.{key}"])
            except json.JSONDecodeError as e:
                raise ModelError(f"{onnx_path}: metadata dfq_deploy.{key} is not JSON ({e})", hint=hint) from None
    problems = input_spec_problems(**out)  # the model card's own checks, on the fields the metadata has
    if problems:
        raise ModelError(f"{onnx_path}: malformed dfq-deploy metadata: " + "; ".join(problems), hint=hint)
    out["profile"] = meta.get("dfq_deploy.profile")
    return out


def _check_engine_belongs(plan: Path, onnx_path: Path) -> None:
    """A plan from ``dfq-deploy compile`` must have been built from this very ONNX file (its record says which)."""
    try:
        record = json.loads(Path(f"{plan}.json").read_text())
    except (OSError, ValueError):
        raise ModelError(f"--engine {plan}: its record {plan}.json is missing or unreadable",
                         hint="build the plan with `dfq-deploy compile`, which writes both") from None
    actual = file_sha256(onnx_path)
    if not isinstance(record, dict) or record.get("onnx_sha256") != actual:
        raise ModelError(f"--engine {plan} was built from another ONNX file than {onnx_path}",
                         hint=f"rebuild it: `dfq-deploy compile {onnx_path} --target tensorrt --overwrite`")


def validate(cfg: ValidateConfig) -> dict:
    """Run the validation described in the module docstring; return the report (also written to disk).

    Raises:
        ConfigError / DataError / ModelError: bad target, data or model; nothing to compare with the reference.
        RuntimeUnavailableError: none of the runtimes asked for can run here (nothing would be compared).
        ParityError: a runtime fails the gate (the reports are written first).
    """
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.out is not None and Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise ConfigError(f"--out {cfg.out} is a file: the reports go into a folder",
                          hint="pass a folder (it is created if missing), or leave --out out")
    target = _open_target(cfg)
    meta = _metadata(target.onnx_path)
    data = _eval_data(cfg, meta, target.onnx_path)
    # nothing passes that compared nothing: at least one runtime must run against the reference (checked first)
    compared, skipped = _runtimes_here(cfg.runtimes, has_student=target.student is not None)
    if target.student is not None:
        reference_name, reference_rt = "torch", make_runtime("torch", target.student, cfg)
    else:  # no PyTorch model: the graph's own semantics, unoptimised
        reference_name = "onnx (unoptimised reference)"
        reference_rt = make_runtime("onnxruntime", target.onnx_path, cfg, optimize=False)
    reference = run_logits(reference_rt, data, progress=cfg.progress)
    if cfg.engine:
        _check_engine_belongs(Path(cfg.engine), target.onnx_path)
    with contextlib.ExitStack() as stack:
        emulated = None
        if cfg.emulate_cpu is not None:  # ONNX Runtime, end to end and layer by layer, on the emulated CPU
            from ..runtimes.emulated import EmulatedCPU

            emulated = stack.enter_context(EmulatedCPU(cfg.emulate_cpu, cfg.threads or 1))
        outputs = {name: run_logits(make_runtime(name, target.onnx_path, cfg, emulated=emulated), data,
                                    progress=cfg.progress) for name in compared}
        report = build_report(reference_name, reference, outputs, skipped, data, target.onnx_path, cfg.gate,
                              student=target.student, profile=meta.get("profile"), threads=cfg.threads,
                              progress=cfg.progress, emulated=emulated)
    report["changed_since_run"] = target.changed  # files that differ from the run's manifest.json (not gated)
    write_reports(target.out_dir, report, history_figure(target.history))
    raise_for_gate(report, target.out_dir / "validation.html",
                   hint="the report's layer table names the faulty activation; a correct export passes the default "
                        "gate (docs/validate.md)")
    return report


def make_runtime(name: str, model, cfg: ValidateConfig, *, emulated=None, optimize: bool = True):
    """The runtime ``name`` on ``model`` (the student for torch, an .onnx file otherwise; ``cfg.engine`` stands in
    for tensorrt's plan) with the options ``cfg`` gives it, through the runtime registry. ``emulated``: the
    :class:`~dfq_deploy.runtimes.emulated.EmulatedCPU` that ONNX Runtime runs on, or None; ``optimize`` False:
    ONNX Runtime with its graph optimisations off (the graph's own semantics)."""
    from ..runtimes import RuntimeOptions
    from ..runtimes import make_runtime as from_registry

    options = RuntimeOptions(threads=cfg.threads, optimize=optimize, engine=cfg.engine,
                             emulate_cpu=cfg.emulate_cpu if emulated is not None else None)
    return from_registry(name, model, options)


@dataclass
class _Target:
    """What ``validate`` checks: the graph, where its reports go and, for a run directory, the run's student."""

    onnx_path: Path
    out_dir: Path
    student: object = None
    history: list = field(default_factory=list)
    changed: list = field(default_factory=list)    # files that differ from the run's manifest.json


def _open_target(cfg: ValidateConfig) -> _Target:
    """A train-export run directory (its manifest verified, its student loaded) or a bare .onnx file."""
    target = Path(cfg.target)
    if target.is_dir():
        from ..rundir import load_run, verify_run

        onnx_path = target / "model.onnx"
        if not onnx_path.is_file():
            raise ConfigError(f"{target} has no model.onnx", hint="pass a train-export run directory or an .onnx file")
        changed = verify_run(target)
        student, _, run_report = load_run(target)
        return _Target(onnx_path, Path(cfg.out) if cfg.out else target, student, run_report.get("history", []),
                       changed)
    if target.is_file():
        return _Target(target, Path(cfg.out) if cfg.out else target.parent)
    raise ConfigError(f"{target} not found", hint="pass a train-export run directory or an .onnx file")


def _eval_data(cfg: ValidateConfig, meta: dict, onnx_path: Path):
    """The evaluation set, normalised and sized as the model's metadata says."""
    from ..data import load_eval_set

    if "input_shape" not in meta:
        raise ConfigError(f"{onnx_path} has no dfq-deploy metadata (input shape, normalisation)",
                          hint="validate models exported by dfq-deploy")
    data = load_eval_set(cfg.data, meta.get("mean", [0.0]), meta.get("std", [1.0]), limit=cfg.limit,
                         root=cfg.data_root, input_shape=meta["input_shape"], class_names=meta.get("class_names"))
    if tuple(data.images.shape[1:]) != tuple(meta["input_shape"]):
        raise ConfigError(f"evaluation images are {tuple(data.images.shape[1:])} but the model expects "
                          f"{tuple(meta['input_shape'])}",
                          hint="pick evaluation data of the model's size: --data imagefolder:PATH (resized and "
                               "centre-cropped to it) or --data synthetic")
    return data


def _runtimes_here(names: tuple[str, ...], *, has_student: bool) -> tuple[list[str], dict[str, str]]:
    """(the runtimes to compare with the reference, {runtime: why it is skipped}); raises when nothing would be
    compared."""
    from ..runtimes import find_runtime

    compared, skipped = [], {}
    for name in names:
        if name == "torch":
            if not has_student:
                skipped[name] = "no PyTorch model next to a bare .onnx (pass the run directory)"
            continue  # the reference itself
        cls, reason = find_runtime(name)
        if cls is None:
            skipped[name] = reason
        else:
            compared.append(name)
    if not compared:
        if not skipped:
            raise ConfigError("--runtimes torch alone compares the PyTorch reference with itself",
                              hint="add a runtime to compare with it, e.g. --runtimes torch,onnxruntime")
        if "torch" in skipped and len(skipped) == 1:
            raise ConfigError(f"nothing to compare: {skipped['torch']}",
                              hint="pass the train-export run directory, or --runtimes onnxruntime for a bare .onnx")
        raise RuntimeUnavailableError("nothing was compared: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()),
                                      hint="install a runtime that can run here, or add --runtimes onnxruntime")
    return compared, skipped


def build_report(reference_name: str, reference: np.ndarray, outputs: dict[str, np.ndarray], skipped: dict,
                 data, onnx_path: Path, gate: Gate, *, student=None, profile: str | None = None,
                 threads: int | None = None, progress: bool = False, emulated=None, census: dict | None = None) -> dict:
    """The validation report (a plain dict, written as ``validation.json``) of logits already computed.
    ``census``: the graph's integer-kernel census where the caller took it already."""
    result = check_parity(reference_name, reference, outputs, data, onnx_path, gate, student=student,
                          profile=profile, skipped=skipped, threads=threads, progress=progress, emulated=emulated,
                          census=census)
    labels = data.labels.numpy() if data.labelled else None
    return {
        "model": str(onnx_path), "profile": profile, "data": data.name, "samples": len(data),
        "labelled": labels is not None,
        "reference_accuracy": float((reference.argmax(1) == labels).mean() * 100) if labels is not None else None,
        "output_step": result.output_step, **result.to_dict(), "class_names": list(data.class_names),
    }


def history_figure(history: list[dict]) -> bytes | None:
    """The training history as PNG (what a run's ``losses.png`` holds); None without a history."""
    from ..figures import history_png

    return history_png(history) if history else None


def write_reports(out_dir: Path, report: dict, history_png: bytes | None = None) -> None:
    """``validation.json`` and ``validation.html`` (with ``history_png``, the training history as PNG, among its
    figures) in ``out_dir``, each written atomically."""
    from .html_report import render_html

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("validation.json", json.dumps(report, indent=2) + "\n"),
                       ("validation.html", render_html(report, history_png))):
        atomic_write(out_dir / name, text)
