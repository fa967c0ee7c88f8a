"""Stage 5, write: the run's report (``report.json``), its short human summary (``summary.txt``), ``recipe.yaml``,
``losses.png`` and the validation reports. The gate's verdict is worded by :mod:`dfq_deploy.validate.verdict`, as
in every other output that states it."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from datetime import datetime

import torch

from .. import __version__
from ..device import device_name
from .context import RunContext
from ..quant.grid import grid_text
from .resolve import recipe_yaml
from .stages import Checked, Exported, Trained, percent

FILES = ["model.onnx", "student.safetensors", "report.json", "recipe.yaml", "summary.txt", "train.log", "losses.png",
         "validation.json", "validation.html", "manifest.json"]


def build_report(ctx: RunContext, trained: Trained, exported: Exported, checked: Checked,
                 digests: list[str] | None = None) -> dict:
    """``report.json`` of a run. ``digests``: the student's sha256 on every process of a multi-process run."""
    cfg, inp, validation = ctx.cfg, ctx.inputs, checked.validation
    engine_note = inp.runtime[2]
    rules = exported.tensorrt_rules
    distributed = {} if digests is None else {"distributed": {
        "world_size": ctx.world.size, "backend": ctx.world.backend, "student_sha256_per_rank": digests,
        "identical_on_every_rank": len(set(digests)) == 1}}
    return {
        "dfq_deploy_version": __version__, "created": datetime.now().isoformat(timespec="seconds"),
        "target": cfg.target, "recipe": cfg.recipe, "recipe_config": asdict(inp.recipe_cfg),
        "scheme": inp.scheme.to_dict(), "scheme_tag": inp.scheme.tag,
        "teacher": {"card": str(inp.card_path), "arch": inp.card.arch, "accuracy": trained.teacher_accuracy,
                    "card_accuracy": inp.card.test_accuracy},
        "budget": inp.budget or None,
        "eval": {"name": inp.eval_set.name, "samples": len(inp.eval_set), "labelled": inp.eval_set.labelled,
                 "input_shape": list(inp.card.input_shape)},
        "export": {"profile": exported.result.profile, "passes": exported.result.passes,
                   "nodes": exported.result.num_nodes},
        "census": exported.census.to_dict(), "parity": {k: v for k, v in checked.parity.items() if k != "confusion"},
        "portability": {**{k: v for k, v in validation["pair_sums"].items() if k != "layers"},
                        "portable": validation["portable"]},
        "gate": {"passed": validation["passed"], "failures": validation["failures"], **validation["gate"],
                 "layers": {k: v for k, v in validation["layers"].items() if k != "layers"},
                 "float64_agreement": validation["float64_agreement"], "tie_replay": validation.get("tie_replay")},
        "history": trained.history,
        "tensorrt": None if rules is None else {"rule_check": rules.to_dict(),
                                                "engine": "built" if engine_note is None else
                                                f"not built: {engine_note}"},
        "timings_s": {k: round(v, 1) for k, v in ctx.timings.items()},
        "device": device_name(inp.device),
        "checkpoint": {"every": cfg.checkpoint_every if ctx.world is None else None,
                       "resumed_from": ctx.resumed_from},
        **distributed,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                    "cpu_info": validation["cpu"]},
        "files": FILES + (["synthetic_set.safetensors"] if (ctx.run_dir / "synthetic_set.safetensors").exists()
                          else []),
    }


def write_run_files(ctx: RunContext, report: dict, trained: Trained, checked: Checked) -> None:
    """report.json, recipe.yaml, summary.txt, losses.png, validation.json/html into the run directory."""
    from ..figures import history_png
    from ..validate.validate import write_reports

    run_dir = ctx.run_dir
    figure = history_png(trained.history)
    (run_dir / "losses.png").write_bytes(figure)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (run_dir / "recipe.yaml").write_text(recipe_yaml(ctx.cfg.recipe, ctx.inputs.recipe_cfg))
    (run_dir / "summary.txt").write_text(summary_text(report) + "\n")
    write_reports(run_dir, checked.validation, figure if trained.history else None)


def summary_text(r: dict) -> str:
    """The short human summary of a run report."""
    from ..isa import describe
    from ..validate.verdict import layer_thresholds, portability_text, runtime_thresholds, status

    p, g = r["parity"], r["gate"]
    lines = [
        f"dfq-deploy {r['dfq_deploy_version']}  target={r['target']}  recipe={r['recipe']}  scheme={r['scheme_tag']}"
        + grid_text(r["scheme"].get("weight_grid", "narrow")),
        f"  teacher FP accuracy       {percent(r['teacher']['accuracy'])}",
        f"  {'student ' + r['scheme_tag'] + ' PyTorch':<26}{percent(p['reference_accuracy'])}",
        f"  {'student ' + r['scheme_tag'] + ' ' + p['runtime']:<26}{percent(p['accuracy'])}",
        f"  top-1 agreement           {p['top1_agreement']:.3f} %  ({runtime_thresholds(p)})",
        f"  max |logit diff|          {p['max_abs_diff']:.3g}"
        + (f"  = {p['max_diff_steps']} output steps (reported, not gated)" if p["max_diff_steps"] is not None
           else ""),
        f"  layer-local check         worst {g['layers']['worst_steps']:g} step, {g['layers']['worst_mismatch']:.4%} "
        f"of an activation on another code, {g['layers']['worst_unexplained']:.4%} without a tie "
        f"(gate {layer_thresholds(g)})",
        f"  parity gate               {status(g['passed'], g['failures'])}",
    ]
    if (r.get("budget") or {}).get("scaled"):
        b = r["budget"]
        scaled = ", ".join(f"{k}={v}" for k, v in b["scaled"].items())
        lines.append(f"  budget                    {b['work_per_image']:.3g} GMAC-equivalents per image: scaled "
                     f"to fit budget_gmac={b['budget_gmac']:g}: {scaled}")
    if r.get("portability"):
        text = portability_text(r["portability"], r["portability"].get("portable"))
        lines.append(f"  portability               {text}")
    if r["machine"].get("cpu_info"):
        lines.append(f"  checked on                {describe(r['machine']['cpu_info'])}")
    lines += _kernels(r)
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


def _kernels(r: dict) -> list[str]:
    """How the target runs the graph: ONNX Runtime's integer kernels, or TensorRT's rules and engine."""
    p, c, t = r["parity"], r["census"], r.get("tensorrt")
    if not t:
        return [f"  integer kernels           {c['integer_compute']} Conv/Gemm as integer, {len(c['float_compute'])} "
                f"float  ({', '.join(f'{k} {v}' for k, v in c['op_counts'].items() if k.startswith('Q'))})"]
    lines = []
    if p["runtime"] != "tensorrt":
        lines.append(f"  stand-in                  {p['runtime']} (CPU) for TensorRT, which is not here: it checks "
                     "the tensorrt profile's integers with CPU kernels; TensorRT's GPU kernels add in int32")
    return lines + [f"  TensorRT Q/DQ rules       {'pass' if t['rule_check']['ok'] else 'FAIL'} "
                    f"({t['rule_check']['quantized_compute']} quantized Conv/Gemm, static check)",
                    f"  TensorRT engine           {t['engine']}"]
