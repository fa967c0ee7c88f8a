"""``train_export``: the whole mission in one call — data-free low-bit training, integer ONNX export, runtime parity.

Everything the ``dfq-deploy train-export`` command does is available here from Python.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from . import __version__, distributed
from .checkpoint import NO_CHECKPOINT, Checkpointer, RunInterrupted
from .config import check_output_file, config_from_dict
from .errors import ConfigError, DfqDeployError, ModelError, TrainingError
from .quant import QuantScheme
from .rundir import (RunDir, check_run_dir_free, create_run_dir, load_run, read_run_config, reopen_run_dir, sha256,
                     verify_run, write_run_config)
from .device import device_name, resolve_device
from .targets import Target, get_target
from .validate.gate import Gate

log = logging.getLogger("dfq_deploy")


@dataclass(frozen=True)
class TrainExportConfig:
    target: str = "onnxruntime"            # runtime the model is deployed to (chooses the export profile)
    teacher: str | None = None             # model card .json; None = the teacher shipped with dfq-deploy
    recipe: str = "ptq"                    # data-free recipe name (dfq_deploy.recipes.RECIPES; DEFAULT_RECIPE)
    recipe_options: dict = field(default_factory=dict)   # overrides of the recipe's config fields
    scheme: QuantScheme = QuantScheme()    # bit widths of the student
    eval_data: str = "fashion-mnist"       # evaluation set, never used for training: fashion-mnist, imagefolder:PATH
                                           # (labelled when its folders are the card's classes) or synthetic (no
                                           # labels: parity is checked, accuracy is not measured)
    eval_limit: int | None = None          # evaluate on the first N images only (quick checks)
    data_root: str | None = None           # folder of the evaluation files (default: Debian's)
    out: str | None = None                 # run directory; default runs/<time>-<recipe>-<bits>
    gate: Gate = Gate()                    # parity gate thresholds (the same defaults as `validate`)
    threads: int | None = None             # torch / ONNX Runtime intra-op threads (None = library default)
    device: str = "auto"                   # where the recipe trains: auto | cpu | cuda | cuda:N (dfq_deploy.device)
    checkpoint_every: int = 50             # training steps between checkpoints (0: only on SIGINT/SIGTERM and at
                                           # stage boundaries; dfq_deploy.checkpoint)
    progress: bool = True

    def __post_init__(self):
        def bad_int(v, low):
            return v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low)

        if bad_int(self.threads, 1):
            raise ConfigError(f"threads={self.threads!r} must be a whole number >= 1", hint="e.g. --threads 2")
        if bad_int(self.eval_limit, 1):
            raise ConfigError(f"eval_limit={self.eval_limit!r} must be a whole number >= 1",
                              hint="e.g. --eval-limit 1000, or leave it out for the whole test split")
        if bad_int(self.checkpoint_every, 0):
            raise ConfigError(f"checkpoint_every={self.checkpoint_every!r} must be a whole number >= 0",
                              hint="use --checkpoint-every N (0 = only on SIGINT / SIGTERM and at stage boundaries)")
        if self.threads is not None and self.threads > 1024:
            raise ConfigError(f"threads={self.threads} is past the ceiling of 1024: a typo?", hint="e.g. --threads 2")
        for name in ("out", "teacher", "data_root"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip() or "\0" in value:
                raise ConfigError(f"{name}={value!r} is not a usable path",
                                  hint=f"pass a path, e.g. --{name.replace('_', '-')} DIR")
            try:  # a name that is not valid UTF-8 cannot be written into ONNX metadata, JSON reports or logs
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(f"the path given as {name} is not valid UTF-8: {value!r}",
                                  hint="use a path whose name is UTF-8 text") from None

    def to_dict(self) -> dict:
        """Plain data (JSON) that :meth:`from_dict` reads back: what ``run.json`` keeps for ``--resume``."""
        d = asdict(self)
        d["recipe_options"] = _plain(dict(self.recipe_options))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainExportConfig":
        try:
            d = dict(d)
            d["scheme"] = QuantScheme(**{"portable": False, **d["scheme"]})  # see rundir.load_run
            d["gate"] = Gate(**d["gate"])
            return cls(**d)
        except (TypeError, KeyError) as e:
            raise ConfigError(f"not a train-export configuration: {e}") from e


@dataclass
class RunResult:
    run_dir: Path
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.report["gate"]["passed"])


def _target_runtime(target: Target) -> tuple[type, str, str | None]:
    """(runtime class that checks parity, its report name, why the target runtime itself is not used or None).

    TensorRT engines are built on the device that runs them (a Jetson, a server GPU). Where TensorRT is missing,
    the tensorrt-profile graph is still exported and rule-checked, and its parity is checked in the target's stand-in
    runtime, ONNX Runtime (which computes the same function); the report says the engine was not built and why.
    """
    from .runtimes import find_runtime, get_runtime

    cls, reason = find_runtime(target.runtime)
    if cls is None and target.stand_in_runtime:
        return get_runtime(target.stand_in_runtime), f"{target.stand_in_runtime} ({target.profile} profile)", reason
    if cls is None:
        return get_runtime(target.runtime), target.name, None  # raises RuntimeUnavailableError with its fix
    return cls, target.name, None


def _plain(d: dict) -> dict:
    """Tuples -> lists, so the recipe YAML reads back with yaml.safe_load."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _pct(v: float | None) -> str:
    return "not measured" if v is None else f"{v:.2f} %"


def summary_text(r: dict) -> str:
    """The short human summary of a run report."""
    from .isa import describe
    from .validate.gate import portability_text

    p, c, g = r["parity"], r["census"], r["gate"]
    lines = [
        f"dfq-deploy {r['dfq_deploy_version']}  target={r['target']}  recipe={r['recipe']}  scheme={r['scheme_tag']}",
        f"  teacher FP accuracy       {_pct(r['teacher']['accuracy'])}",
        f"  {'student ' + r['scheme_tag'] + ' PyTorch':<26}{_pct(p['reference_accuracy'])}",
        f"  {'student ' + r['scheme_tag'] + ' ' + p['runtime']:<26}{_pct(p['accuracy'])}",
        f"  top-1 agreement           {p['top1_agreement']:.3f} %  (gate >= {p['min_agreement']} %"
        + (f", accuracy within {p['max_accuracy_diff']} pt" if p["accuracy"] is not None else "")
        + (f"; rounding-bound inputs: the reference agrees with its own float64 evaluation on "
           f"{p['rounding_baseline']:.3f} %" if p.get("rounding_baseline") is not None else "") + ")",
        f"  max |logit diff|          {p['max_abs_diff']:.3g}"
        + (f"  = {p['max_diff_steps']} output steps (reported, not gated)" if p["max_diff_steps"] is not None
           else ""),
        f"  layer-local check         worst {g['layers']['worst_steps']:g} step, {g['layers']['worst_mismatch']:.4%} "
        f"of an activation on another code, {g['layers']['worst_unexplained']:.4%} without a tie (gate <= "
        f"{g['layer_max_steps']:g} step, <= {g['layer_max_mismatch']:.3%})",
        f"  parity gate               {'pass' if g['passed'] else 'FAIL: ' + '; '.join(g['failures'])}",
    ]
    if (r.get("budget") or {}).get("scaled"):
        b = r["budget"]
        lines.append(f"  budget                    {b['gmac_per_image']:.3g} GMAC per image: scaled to fit "
                     f"budget_gmac={b['budget_gmac']:g}: " + ", ".join(f"{k}={v}" for k, v in b["scaled"].items()))
    if r.get("portability"):
        text = portability_text(r["portability"], r["portability"].get("portable"))
        lines.append(f"  portability               {text}")
    if r["machine"].get("cpu_info"):
        lines.append(f"  checked on                {describe(r['machine']['cpu_info'])}")
    if r.get("tensorrt"):
        t = r["tensorrt"]
        if p["runtime"] != "tensorrt":
            lines.append(f"  stand-in                  {p['runtime']} (CPU) for TensorRT, which is not here: it checks "
                         "the tensorrt profile's integers with CPU kernels; TensorRT's GPU kernels add in int32")
        lines += [f"  TensorRT Q/DQ rules       {'pass' if t['rule_check']['ok'] else 'FAIL'} "
                  f"({t['rule_check']['quantized_compute']} quantized Conv/Gemm, static check)",
                  f"  TensorRT engine           {t['engine']}"]
    else:
        lines.append(f"  integer kernels           {c['integer_compute']} Conv/Gemm as integer, "
                     f"{len(c['float_compute'])} "
                     f"float  ({', '.join(f'{k} {v}' for k, v in c['op_counts'].items() if k.startswith('Q'))})")
    lines += [
        f"  evaluated on              {r['eval']['name']} ({r['eval']['samples']} images)"
        + ("" if r["eval"].get("labelled", True) else ": unlabelled, so accuracy was not measured; the gate "
           "checked parity only (layer-local, agreement, integer kernels)"),
        f"  wall time                 {r['timings_s']['total']:.0f} s",
    ]
    if r["scheme"]["act_bits"] < 8 or r["scheme"]["weight_bits"] < 8:
        lines.append("  note: ONNX Runtime and TensorRT have no sub-8-bit conv kernels: low-bit values run in 8-bit "
                     "integer kernels (no 4-bit speed-up)")
    return "\n".join(lines)


@dataclass
class _Inputs:
    """Everything a run needs, resolved and validated before any training starts."""

    target: Target
    scheme: QuantScheme
    recipe_cfg: Any
    recipe_fn: Any
    runtime: tuple[type, str, str | None]   # (runtime class that checks parity, its report name, engine note)
    teacher: torch.nn.Module
    student: torch.nn.Module                # the quantized student, untrained (quantize_model of the teacher)
    card: Any
    card_path: Path
    eval_set: Any
    device: torch.device
    budget: dict = field(default_factory=dict)  # the teacher's cost and what the recipe's budget scaled


def _resolve(cfg: TrainExportConfig) -> _Inputs:
    """Stage 1: check the target, the recipe and its options, the teacher and the evaluation data."""
    from .data import load_eval_set
    from .models import SHIPPED_TEACHER, load_teacher
    from .quant import quantize_model
    from .recipes import RECIPES

    target = get_target(cfg.target)
    device = resolve_device(cfg.device)
    runtime = _target_runtime(target)
    scheme = replace(cfg.scheme, trt_compatible=True) if target.trt_compatible else cfg.scheme
    if cfg.recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {cfg.recipe!r}", hint=f"use one of {', '.join(RECIPES)}")
    recipe_cls, recipe_fn = RECIPES[cfg.recipe]
    recipe_cfg = config_from_dict(recipe_cls, cfg.recipe_options, where=f"recipe {cfg.recipe}")
    card_path = Path(cfg.teacher) if cfg.teacher else SHIPPED_TEACHER
    teacher, card = load_teacher(card_path)
    _runs_at_its_size(teacher, card, card_path)
    recipe_cfg = _without_batchnorm(teacher, cfg.recipe, recipe_cfg)
    budget = {}
    if hasattr(recipe_cfg, "budget_gmac"):
        from .models import gmac_per_image
        from .recipes.ptq import fit_budget

        gmac = gmac_per_image(teacher, card.input_shape)
        recipe_cfg, scaled = fit_budget(recipe_cfg, gmac, set(cfg.recipe_options))
        budget = {"gmac_per_image": round(gmac, 4), "budget_gmac": recipe_cfg.budget_gmac, "scaled": scaled}
        if scaled:
            log.warning("the teacher costs %.3g GMAC per image: to fit budget_gmac=%g the recipe runs with %s "
                        "(set them, or --set budget_gmac=0, to run more)", gmac, recipe_cfg.budget_gmac,
                        ", ".join(f"{k}={v}" for k, v in scaled.items()))
    # quantized here, before any work: a model the quantizer cannot take (untraceable, attention) is refused now
    student = quantize_model(teacher, scheme)
    if "pixel_mean" in recipe_cls.__dataclass_fields__ and not recipe_cfg.pixel_mean:
        # inverted images are kept inside the range a real normalised image can take (see recipes/lis.py)
        recipe_cfg = replace(recipe_cfg, pixel_mean=tuple(card.mean), pixel_std=tuple(card.std))
    eval_set = load_eval_set(cfg.eval_data, card.mean, card.std, limit=cfg.eval_limit, root=cfg.data_root,
                             input_shape=card.input_shape, class_names=card.class_names)
    if tuple(eval_set.images.shape[1:]) != tuple(card.input_shape):
        raise ConfigError(f"evaluation images are {tuple(eval_set.images.shape[1:])} ({cfg.eval_data}) but the "
                          f"teacher expects {tuple(card.input_shape)}",
                          hint="pick evaluation data of the teacher's size: --eval-data imagefolder:PATH (resized "
                               "and centre-cropped to the card's input_shape) or --eval-data synthetic")
    return _Inputs(target, scheme, recipe_cfg, recipe_fn, runtime, teacher, student, card, card_path, eval_set,
                   device, budget)


def _runs_at_its_size(teacher: torch.nn.Module, card, card_path: Path) -> None:
    """The float teacher must run on one input of its card's shape (a 28x28 image shrinks below a DenseNet's or
    VGG's kernels): said before any work, with the size to use."""
    try:
        with torch.no_grad():
            teacher(torch.zeros(1, *card.input_shape))
    except (RuntimeError, ValueError) as e:
        raise ModelError(f"the teacher does not run on its card's input_shape {list(card.input_shape)}: "
                         f"{str(e).splitlines()[0][:200]}",
                         hint=f"set input_shape in {card_path} to the size the model was trained at (torchvision's "
                              "classifiers were trained at [3, 224, 224]; docs/models.md lists the smallest each "
                              "takes)") from e


def _without_batchnorm(teacher: torch.nn.Module, recipe: str, recipe_cfg):
    """A teacher without BatchNorm (VGG, SqueezeNet, AlexNet) stores no statistics of its training data, which is
    what every data-free recipe inverts, except ``ptq`` calibrating on noise: ``ptq`` switches to that source (said
    in the log and in recipe.yaml); the others are refused before any work."""
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in teacher.modules()):
        return recipe_cfg
    if recipe == "ptq":
        if recipe_cfg.source != "noise":
            log.warning("the teacher has no BatchNorm layer, so there are no statistics to invert images from: "
                        "ptq calibrates and reconstructs on noise images (source=noise)")
            return replace(recipe_cfg, source="noise")
        return recipe_cfg
    raise ModelError(f"recipe {recipe} synthesises images from the teacher's BatchNorm statistics, and this teacher "
                     "has no BatchNorm layer", hint="use --recipe ptq (it calibrates such a model on noise images)")


def _train(cfg: TrainExportConfig, inp: _Inputs, run_dir: Path | None, timings: dict, ck: Checkpointer
           ) -> tuple[torch.nn.Module, list, float]:
    """Stage 2: the teacher's accuracy, then the recipe trains the quantized student (checkpointed in ``ck``, and
    stopped cleanly by SIGINT / SIGTERM); its weights are saved. ``run_dir`` None: a helper process of a
    multi-process run (it trains, and writes nothing)."""
    from safetensors.torch import save_file

    from .data import evaluate

    t = time.time()
    teacher = inp.teacher.to(inp.device)
    # unlabelled evaluation data (synthetic, or folders that are not the card's classes): no accuracy
    teacher_acc = evaluate(teacher, inp.eval_set.images, inp.eval_set.labels, progress=cfg.progress) \
        if run_dir is not None and inp.eval_set.labelled else None
    timings["teacher_eval"] = time.time() - t
    log.info("teacher FP accuracy %s on %s; training on %s", _pct(teacher_acc), inp.eval_set.name,
             device_name(inp.device))
    student = inp.student.to(inp.device)
    t = time.time()
    try:
        with ck.stop_on_signals():
            history = inp.recipe_fn(teacher, student, inp.recipe_cfg, tuple(inp.card.input_shape),
                                    len(inp.card.class_names), progress=cfg.progress, run_dir=run_dir, checkpoint=ck)
    finally:  # export, the weights file and the parity check are CPU work
        teacher.cpu()
        student.cpu()
    timings["train"] = time.time() - t
    if run_dir is None:
        return student, history, teacher_acc
    save_file({k: v.detach().clone().contiguous() for k, v in student.state_dict().items()},
              str(run_dir / "student.safetensors"))
    return student, history, teacher_acc


def _export(cfg: TrainExportConfig, inp: _Inputs, student: torch.nn.Module, run_dir: Path, timings: dict):
    """Stage 3: QDQ ONNX for the target's profile, with the run's metadata; kernel census and TensorRT rules."""
    from tqdm.auto import tqdm

    from .export import check_tensorrt_rules, export_onnx, ort_kernel_census

    t = time.time()
    onnx_path = run_dir / "model.onnx"
    card = inp.card
    metadata = {
        "dfq_deploy.version": __version__, "dfq_deploy.recipe": cfg.recipe,
        "dfq_deploy.scheme": json.dumps(inp.scheme.to_dict()), "dfq_deploy.input_shape": json.dumps(card.input_shape),
        "dfq_deploy.mean": json.dumps(card.mean), "dfq_deploy.std": json.dumps(card.std),
        "dfq_deploy.class_names": json.dumps(card.class_names),
        "dfq_deploy.teacher_sha256": sha256(inp.card_path.parent / card.weights),
        "dfq_deploy.student_sha256": sha256(run_dir / "student.safetensors"),
    }
    profile = inp.target.profile
    with tqdm(total=3, desc=f"export ({profile} profile)", disable=not cfg.progress, leave=False) as bar:
        exp = export_onnx(student, onnx_path, tuple(card.input_shape), profile=profile, metadata=metadata,
                          portable=inp.scheme.portable)
        timings["export"] = time.time() - t
        bar.update()
        census = ort_kernel_census(onnx_path)
        bar.update()
        trt_check = check_tensorrt_rules(str(onnx_path)) if profile == "tensorrt" else None
        bar.update()
    log.info("export (%s profile): %s; ONNX Runtime runs %d Conv/Gemm as integer kernels, %d float", cfg.target,
             exp.passes, census.integer_compute, len(census.float_compute))
    if trt_check is not None:
        log.info("TensorRT rule check: %s (%d quantized layers); engine: %s", "pass" if trt_check.ok else "FAIL",
                 len(trt_check.quantized_compute), inp.runtime[2] or "built")
    return onnx_path, exp, census, trt_check


def _check_parity(cfg: TrainExportConfig, inp: _Inputs, student, onnx_path: Path, final_dir: Path, timings: dict):
    """Stage 4: the PyTorch reference and the target runtime on the evaluation set, through the validate gate (the
    same report and HTML page as ``dfq-deploy validate``)."""
    from .runtimes import get_runtime
    from .validate import run_logits
    from .validate.validate import build_report

    rt_cls, rt_name, engine_note = inp.runtime
    t = time.time()
    ref = run_logits(get_runtime("torch")(student), inp.eval_set, progress=cfg.progress)
    timings["torch_eval"] = time.time() - t
    t = time.time()
    other = run_logits(rt_cls(onnx_path, threads=cfg.threads), inp.eval_set, progress=cfg.progress)
    timings[f"{cfg.target}_eval"] = time.time() - t
    t = time.time()
    validation = build_report("torch", ref, {rt_name: other}, {"tensorrt": engine_note} if engine_note else {},
                              inp.eval_set, onnx_path, cfg.gate, student=student, profile=inp.target.profile,
                              threads=cfg.threads, progress=cfg.progress)
    timings["parity_check"] = time.time() - t
    validation["model"] = str(final_dir / "model.onnx")  # where it will be once the run is complete
    parity = validation["runtimes"][rt_name]
    layers = validation["layers"]
    log.info("parity: torch %s, %s %s, agreement %.3f%%, max diff %.3g (%s steps); layer-local worst %.3g "
             "steps, %.4f%% elements: %s", _pct(parity["reference_accuracy"]), rt_name, _pct(parity["accuracy"]),
             parity["top1_agreement"], parity["max_abs_diff"], parity["max_diff_steps"], layers["worst_steps"],
             100 * layers["worst_mismatch"], "pass" if validation["passed"] else "FAIL: " +
             "; ".join(validation["failures"]))
    return validation, parity


def _write_report(cfg: TrainExportConfig, inp: _Inputs, run_dir: Path, history, teacher_acc, exp, census, trt_check,
                  validation, parity, timings: dict, checkpoint: dict, extra: dict | None = None) -> dict:
    """Stage 5: report.json, recipe.yaml, summary.txt, losses.png, validation.json/html."""
    from .figures import plot_history
    from .validate.validate import write_reports

    plot_history(history, run_dir / "losses.png")
    engine_note = inp.runtime[2]
    report = {
        "dfq_deploy_version": __version__, "created": datetime.now().isoformat(timespec="seconds"),
        "target": cfg.target, "recipe": cfg.recipe, "recipe_config": asdict(inp.recipe_cfg),
        "scheme": inp.scheme.to_dict(), "scheme_tag": inp.scheme.tag,
        "teacher": {"card": str(inp.card_path), "arch": inp.card.arch, "accuracy": teacher_acc,
                    "card_accuracy": inp.card.test_accuracy},
        "budget": inp.budget or None,
        "eval": {"name": inp.eval_set.name, "samples": len(inp.eval_set), "labelled": inp.eval_set.labelled,
                 "input_shape": list(inp.card.input_shape)},
        "export": {"profile": exp.profile, "passes": exp.passes, "nodes": exp.num_nodes},
        "census": census.to_dict(), "parity": {k: v for k, v in parity.items() if k != "confusion"},
        "portability": {**{k: v for k, v in validation["pair_sums"].items() if k != "layers"},
                        "portable": validation["portable"]},
        "gate": {"passed": validation["passed"], "failures": validation["failures"], **validation["gate"],
                 "layers": {k: v for k, v in validation["layers"].items() if k != "layers"},
                 "float64_agreement": validation["float64_agreement"]},
        "history": history,
        "tensorrt": None if trt_check is None else {"rule_check": trt_check.to_dict(),
                                                    "engine": "built" if engine_note is None else
                                                    f"not built: {engine_note}"},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "device": device_name(inp.device),
        "checkpoint": checkpoint,
        **(extra or {}),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                    "cpu_info": validation["cpu"]},
        "files": ["model.onnx", "student.safetensors", "report.json", "recipe.yaml", "summary.txt", "train.log",
                  "losses.png", "validation.json", "validation.html", "manifest.json"]
        + (["synthetic_set.safetensors"] if (run_dir / "synthetic_set.safetensors").exists() else []),
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump({"recipe": cfg.recipe, **_plain(asdict(inp.recipe_cfg))},
                                                        sort_keys=False))
    (run_dir / "summary.txt").write_text(summary_text(report) + "\n")
    write_reports(run_dir, validation, history)
    return report


def train_export(cfg: TrainExportConfig) -> RunResult:
    """Train a low-bit student data-free, export it for ``cfg.target``, and check parity with PyTorch.

    Writes a run directory (``model.onnx``, ``student.safetensors``, ``report.json``, ``summary.txt``,
    ``train.log``, ``losses.png``) atomically: on failure nothing is left behind under its name. Training is
    checkpointed every ``cfg.checkpoint_every`` steps; SIGINT / SIGTERM stop it at the next step boundary with the
    checkpoint saved, and :func:`resume_run` continues it.

    Returns:
        RunResult with the run directory and the report.

    Raises:
        ConfigError, ModelError, DataError: bad input, before training starts.
        RuntimeUnavailableError: the target runtime is missing here (checked first).
        RunInterrupted: stopped by a signal; the partial run is kept for ``--resume``.
        ParityError: the runtime disagrees with the PyTorch reference beyond the gate (the run is kept).
    """
    if distributed.launched():
        return _train_export_distributed(cfg)
    inp = _resolve(cfg)
    # the run must not depend on the folder it is resumed from: the teacher's card is kept as an absolute path
    cfg = replace(cfg, teacher=str(inp.card_path.resolve()))
    rd = create_run_dir(cfg.out, cfg.recipe, inp.scheme.tag)
    try:
        write_run_config(rd, {"format": 1, "dfq_deploy_version": __version__, "config": cfg.to_dict()})
    except BaseException:
        rd.discard()
        raise
    return _execute(cfg, inp, rd, Checkpointer(rd.partial, cfg.checkpoint_every))


def preflight(cfg: TrainExportConfig) -> str:
    """Every check :func:`train_export` makes before training (target, recipe and options, teacher, evaluation
    data, device, run directory), without training or writing anything: what ``--nproc`` runs once before it starts
    the processes, and ``--dry-run`` alone. Returns a short text: what would run, and the resolved recipe (YAML).

    Raises:
        the errors :func:`train_export` raises before training.
    """
    inp = _resolve(cfg)
    check_run_dir_free(cfg.out, cfg.recipe, inp.scheme.tag)
    recipe_yaml = yaml.safe_dump({"recipe": cfg.recipe, **_plain(asdict(inp.recipe_cfg))}, sort_keys=False)
    return (f"checked, nothing written: target={cfg.target} recipe={cfg.recipe} scheme={inp.scheme.tag} "
            f"teacher={inp.card_path} device={device_name(inp.device)} evaluation={inp.eval_set.name} "
            f"({len(inp.eval_set.labels)} images)\n{recipe_yaml.rstrip()}")


def resume_run(run_dir: str | Path, *, device: str | None = None, threads: int | None = None,
               progress: bool | None = None, checkpoint_every: int | None = None) -> RunResult:
    """Continue an interrupted :func:`train_export` run from its last checkpoint, with the settings it started with
    (``run.json``). ``device``, ``threads``, ``progress`` and ``checkpoint_every`` may differ (on the CPU, a run
    resumed on the same device is bit-identical to an uninterrupted one).

    Raises:
        ConfigError: nothing to resume at ``run_dir``, its run is still alive, or its files are unreadable.
        plus everything :func:`train_export` raises.
    """
    rd = reopen_run_dir(run_dir)
    try:
        saved = read_run_config(rd)
        cfg = TrainExportConfig.from_dict(saved["config"])
        changes = {k: v for k, v in (("device", device), ("threads", threads), ("progress", progress),
                                     ("checkpoint_every", checkpoint_every)) if v is not None}
        cfg = replace(cfg, out=str(rd.final), **changes)
        if saved.get("dfq_deploy_version") != __version__:
            log.warning("resuming a run started by dfq-deploy %s with %s: the result may differ from an "
                        "uninterrupted run", saved.get("dfq_deploy_version"), __version__)
        ck = Checkpointer.load(rd.partial, cfg.checkpoint_every)
        inp = _resolve(cfg)
    except BaseException:
        rd.release()
        raise
    log.info("resuming %s from its checkpoint (%s)", rd.final, ck.describe())
    return _execute(cfg, inp, rd, ck)


class PeerError(DfqDeployError):
    """Another process of a multi-process run failed; this one exits with the same code."""

    def __init__(self, message: str, exit_code: int, hint: str | None = None):
        super().__init__(message, hint)
        self.exit_code = exit_code


def _train_export_distributed(cfg: TrainExportConfig) -> RunResult:
    """One process of a ``torchrun`` launch (see :mod:`dfq_deploy.distributed`): every process trains; rank 0
    writes the run directory, exports and validates, and every process ends with rank 0's verdict."""
    device = resolve_device(cfg.device)
    world = distributed.init(device)
    try:
        device = distributed.local_device(device, world)
        cfg = replace(cfg, device=str(device), progress=cfg.progress and world.main)
        error, rd, inp = None, None, None
        try:
            inp = _resolve(cfg)
            cfg = replace(cfg, teacher=str(inp.card_path.resolve()))
            if world.main:
                rd = create_run_dir(cfg.out, cfg.recipe, inp.scheme.tag)
                write_run_config(rd, {"format": 1, "dfq_deploy_version": __version__, "config": cfg.to_dict(),
                                      "world_size": world.size})
        except DfqDeployError as e:
            error = e
        # every process starts training only if every process could start
        problems = [p for p in distributed.all_objects(None if error is None else (error.exit_code, str(error)))
                    if p is not None]
        if error is not None:
            if rd is not None:
                rd.discard()
            raise error
        if problems:
            if rd is not None:
                rd.discard()
            raise PeerError(f"another process could not start: {problems[0][1]}", problems[0][0])
        log.info("process %d of %d (%s, backend %s)", world.rank, world.size, device_name(device), world.backend)
        if world.main:
            return _execute(cfg, inp, rd, NO_CHECKPOINT, world)
        return _follow(cfg, inp, world)
    finally:
        distributed.shutdown()


def _student_digest(student: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in student.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _follow(cfg: TrainExportConfig, inp: _Inputs, world) -> RunResult:
    """A helper process (rank > 0): train with the others, then take rank 0's verdict."""
    student, _, _ = _train(cfg, inp, None, {}, NO_CHECKPOINT)
    distributed.all_objects(_student_digest(student))
    code, message, report, final = distributed.broadcast_object(None)
    if code:
        raise PeerError(f"rank 0: {message}", code)
    return RunResult(Path(final), report)


def _execute(cfg: TrainExportConfig, inp: _Inputs, rd: RunDir, ck: Checkpointer, world=None) -> RunResult:
    """The run in ``rd``: train, export, check parity, report, commit. With ``world`` (rank 0 of several
    processes) the verdict is also sent to the other processes."""
    try:
        result = _execute_run(cfg, inp, rd, ck, world)
    except BaseException as e:
        if world is not None:
            distributed.broadcast_object((getattr(e, "exit_code", 1), str(e).splitlines()[0] if str(e) else
                                          type(e).__name__, None, str(rd.final)))
        raise
    if world is not None:
        distributed.broadcast_object((0, "", result.report, str(result.run_dir)))
    return result


def _is_out_of_memory(e: BaseException) -> bool:
    """True for an allocation failure: CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    text = str(e)
    return isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text


def _execute_run(cfg: TrainExportConfig, inp: _Inputs, rd: RunDir, ck: Checkpointer, world=None) -> RunResult:
    from .validate.gate import raise_for_gate

    t_start = time.time()
    timings: dict[str, float] = {}
    resumed_from = ck.describe() if ck.sections else None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir, final_dir = rd.partial, rd.final
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    keep = False
    extra_report: dict = {}
    try:
        log.info("dfq-deploy %s train-export: target=%s recipe=%s scheme=%s teacher=%s%s", __version__, cfg.target,
                 cfg.recipe, inp.scheme.tag, inp.card_path, f" (resumed at {resumed_from})" if resumed_from else "")
        try:
            student, history, teacher_acc = _train(cfg, inp, run_dir, timings, ck)
            if world is not None:
                digests = distributed.all_objects(_student_digest(student))
                extra_report["distributed"] = {"world_size": world.size, "backend": world.backend,
                                               "student_sha256_per_rank": digests,
                                               "identical_on_every_rank": len(set(digests)) == 1}
        except RunInterrupted as e:
            keep = True
            e.hint = f"continue it with `dfq-deploy train-export --resume {final_dir}`"
            log.info("%s", e)
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: the last checkpoint is still there
            keep = ck.saves > 0 or bool(ck.sections)
            raise
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not _is_out_of_memory(e):
                raise
            keep = ck.saves > 0 or bool(ck.sections)
            raise TrainingError(f"out of memory while training on {device_name(inp.device)}: "
                                f"{str(e).splitlines()[0][:200]}",
                                hint="lower --batch-size (and recon_batch / inversion_batch), or train on a device "
                                     "with more memory" + (f"; the checkpoint is kept: `dfq-deploy train-export "
                                                          f"--resume {final_dir}` after freeing memory"
                                                          if keep else "")) from e
        onnx_path, exp, census, trt_check = _export(cfg, inp, student, run_dir, timings)
        validation, parity = _check_parity(cfg, inp, student, onnx_path, final_dir, timings)
        timings["total"] = time.time() - t_start
        report = _write_report(cfg, inp, run_dir, history, teacher_acc, exp, census, trt_check, validation, parity,
                               timings, {"every": cfg.checkpoint_every if world is None else None,
                                         "resumed_from": resumed_from}, extra_report)
    except BaseException:
        if keep:
            rd.release()
        else:
            rd.discard()
        raise
    finally:
        log.removeHandler(handler)
        handler.close()
    rd.commit()
    result = RunResult(final_dir, report)
    raise_for_gate(validation, final_dir / "validation.html",
                   hint="the run directory is kept; its validation.html names the faulty layer")
    return result


def export_run(run_dir: str | Path, profile: str, out: str | Path | None = None):
    """Re-export the student of a ``train-export`` run for another runtime profile (same weights, same function).

    Returns the :class:`~dfq_deploy.export.ExportResult`. Writes ``RUN_DIR/model.<profile>.onnx`` by default.

    Raises:
        ConfigError: ``run_dir`` is not a run directory.
        ExportError: the model cannot be expressed in the profile (e.g. 8-bit unsigned activations for TensorRT).
    """
    from .export import export_onnx
    from .export.load import load_onnx_safely

    run_dir = Path(run_dir)
    out = check_output_file(out, "--out") if out else run_dir / f"model.{profile}.onnx"  # before any work
    verify_run(run_dir)
    student, card, report = load_run(run_dir)
    metadata = {}
    if (run_dir / "model.onnx").is_file():
        metadata = {p.key: p.value for p in load_onnx_safely(run_dir / "model.onnx").metadata_props
                    if p.key not in ("dfq_deploy.profile", "dfq_deploy.layer_bits")}
    portable = report["scheme"].get("portable", False)  # runs from before the portable scheme: not portable
    return export_onnx(student.eval(), out, tuple(card.input_shape), profile=profile, metadata=metadata,
                       portable=portable)
