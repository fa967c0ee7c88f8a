"""Stages 2 to 4 of a run: train the student, export it, check its parity. Each takes the run's
:class:`~dfq_deploy.pipeline.context.RunContext` and returns what the next stages read."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..device import device_name
from ..rundir import sha256
from .context import RunContext
from ..progress import leave_inner_bars

log = logging.getLogger("dfq_deploy")


def percent(v: float | None) -> str:
    return "not measured" if v is None else f"{v:.2f} %"


@dataclass
class Trained:
    student: torch.nn.Module
    history: list
    teacher_accuracy: float | None


@dataclass
class Exported:
    onnx_path: Path
    result: Any                   # dfq_deploy.export.ExportResult
    census: Any                   # dfq_deploy.export.KernelCensus: how ONNX Runtime runs the graph
    tensorrt_rules: Any = None    # dfq_deploy.export.TensorRTCheck of the tensorrt profile (None: other profiles)


@dataclass
class Checked:
    validation: dict              # validation.json
    parity: dict                  # the target runtime's row of it


def train(ctx: RunContext) -> Trained:
    """Stage 2: the teacher's accuracy, then the recipe trains the quantized student (checkpointed in ``ctx.ck``,
    and stopped cleanly by SIGINT / SIGTERM); its weights are saved. A helper process of a multi-process run
    (``ctx.run_dir`` None) trains, and writes nothing."""
    from safetensors.torch import save_file

    from ..data import evaluate

    cfg, inp, run_dir = ctx.cfg, ctx.inputs, ctx.run_dir
    with ctx.timings.measure("teacher_eval"):
        teacher = inp.teacher.to(inp.device)
        # unlabelled evaluation data (synthetic, or folders that are not the card's classes): no accuracy
        teacher_acc = evaluate(teacher, inp.eval_set.images, inp.eval_set.labels, progress=cfg.progress) \
            if run_dir is not None and inp.eval_set.labelled else None
    log.info("teacher FP accuracy %s on %s; training on %s", percent(teacher_acc), inp.eval_set.name,
             device_name(inp.device))
    student = inp.student.to(inp.device)
    with ctx.timings.measure("train"):
        try:
            with ctx.ck.stop_on_signals():
                history = inp.recipe_fn(teacher, student, inp.recipe_cfg, tuple(inp.card.input_shape),
                                        len(inp.card.class_names), progress=cfg.progress, run_dir=run_dir,
                                        checkpoint=ctx.ck)
        finally:  # export, the weights file and the parity check are CPU work
            teacher.cpu()
            student.cpu()
    if run_dir is not None:
        save_file({k: v.detach().clone().contiguous() for k, v in student.state_dict().items()},
                  str(run_dir / "student.safetensors"))
    return Trained(student, history, teacher_acc)


def export(ctx: RunContext, student: torch.nn.Module) -> Exported:
    """Stage 3: QDQ ONNX for the target's profile, with the run's metadata; its kernel census and, for the
    tensorrt profile, what its TensorRT rule check found."""
    from tqdm.auto import tqdm

    from ..export import export_onnx, ort_kernel_census

    cfg, inp, run_dir = ctx.cfg, ctx.inputs, ctx.run_dir
    onnx_path = run_dir / "model.onnx"
    profile = inp.target.profile
    with tqdm(total=2, desc=f"export ({profile} profile)", disable=not cfg.progress, leave=leave_inner_bars()) as bar:
        with ctx.timings.measure("export"):
            exp = export_onnx(student, onnx_path, tuple(inp.card.input_shape), profile=profile,
                              metadata=_metadata(ctx), portable=inp.scheme.portable)
        bar.update()
        census = ort_kernel_census(onnx_path)
        bar.update()
    # the tensorrt profile refuses to write a graph that breaks a rule (ExportError); its check counts what the
    # report shows (quantized layers, Q/DQ pairs)
    rules = exp.tensorrt_rules
    log.info("export (%s profile): %s; ONNX Runtime runs %d Conv/Gemm as integer kernels, %d float", cfg.target,
             exp.passes, census.integer_compute, len(census.float_compute))
    if rules is not None:
        log.info("TensorRT rule check: pass (%d quantized layers); engine: %s", len(rules.quantized_compute),
                 inp.runtime[2] or "built")
    return Exported(onnx_path, exp, census, rules)


def _metadata(ctx: RunContext) -> dict[str, str]:
    """What ``model.onnx`` records of the run: the tool, recipe and scheme, the input it takes and the weights it
    was made from."""
    inp, card = ctx.inputs, ctx.inputs.card
    return {
        "dfq_deploy.version": __version__, "dfq_deploy.recipe": ctx.cfg.recipe,
        "dfq_deploy.scheme": json.dumps(inp.scheme.to_dict()), "dfq_deploy.input_shape": json.dumps(card.input_shape),
        "dfq_deploy.mean": json.dumps(card.mean), "dfq_deploy.std": json.dumps(card.std),
        "dfq_deploy.class_names": json.dumps(card.class_names),
        "dfq_deploy.teacher_sha256": sha256(inp.card_path.parent / card.weights),
        "dfq_deploy.student_sha256": sha256(ctx.run_dir / "student.safetensors"),
    }


def check(ctx: RunContext, student: torch.nn.Module, exported: Exported) -> Checked:
    """Stage 4: the PyTorch reference and the target runtime on the evaluation set, through the validate gate (the
    same report and HTML page as ``dfq-deploy validate``)."""
    from ..runtimes import RuntimeOptions, make_runtime
    from ..validate import run_logits
    from ..validate.validate import build_report

    cfg, inp, onnx_path = ctx.cfg, ctx.inputs, exported.onnx_path
    rt_cls, rt_name, engine_note = inp.runtime
    with ctx.timings.measure("torch_eval"):
        ref = run_logits(make_runtime("torch", student), inp.eval_set, progress=cfg.progress)
    with ctx.timings.measure(f"{cfg.target}_eval"):
        other = run_logits(rt_cls.from_options(onnx_path, RuntimeOptions(threads=cfg.threads)), inp.eval_set,
                           progress=cfg.progress)
    with ctx.timings.measure("parity_check"):
        validation = build_report("torch", ref, {rt_name: other}, {"tensorrt": engine_note} if engine_note else {},
                                  inp.eval_set, onnx_path, cfg.gate, student=student, profile=inp.target.profile,
                                  threads=cfg.threads, progress=cfg.progress, census=exported.census.to_dict())
    validation["model"] = str(ctx.rd.final / "model.onnx")  # where it will be once the run is complete
    parity = validation["runtimes"][rt_name]
    layers = validation["layers"]
    log.info("parity: torch %s, %s %s, agreement %.3f%%, max diff %.3g (%s steps); layer-local worst %.3g "
             "steps, %.4f%% elements: %s", percent(parity["reference_accuracy"]), rt_name, percent(parity["accuracy"]),
             parity["top1_agreement"], parity["max_abs_diff"], parity["max_diff_steps"], layers["worst_steps"],
             100 * layers["worst_mismatch"], "pass" if validation["passed"] else "FAIL: " +
             "; ".join(validation["failures"]))
    return Checked(validation, parity)
