"""`dfq-deploy validate`: the cross-runtime parity gate, with a JSON and an HTML report."""

from __future__ import annotations

import click

from ._common import gate_options, handle_errors


@click.command("validate")
@click.argument("target", type=click.Path())
@click.option("--runtimes", default="torch,onnxruntime,tensorrt", show_default=True,
              help="Comma-separated runtimes; those missing here are listed as skipped with the reason.")
@click.option("--data", default="fashion-mnist", show_default=True,
              help="fashion-mnist | imagefolder:PATH (one sub-folder per class) | synthetic")
@click.option("--limit", type=int, default=None, help="First N images only.")
@click.option("--data-root", default=None, help="Folder of the Fashion-MNIST files (default: Debian's).")
@click.option("--out", default=None, help="Report folder (default: the run directory, or beside the .onnx).")
@click.option("--threads", type=int, default=None)
@click.option("--engine", default=None, metavar="PLAN",
              help="A TensorRT plan from `dfq-deploy compile` for the tensorrt runtime (checked against this GPU and "
              "TensorRT; default: build the .onnx's engine, cached).")
@click.option("--emulate-cpu", default=None, type=click.Choice(["Haswell"]),
              help="Run ONNX Runtime (end to end and layer by layer) on qemu's emulated CPU, x86 hosts only: "
              "Haswell is AVX2 without VNNI, whose integer kernels add int8 products in saturating 16-bit pairs "
              "(needs qemu-user-static; slow: use --limit).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@gate_options
@handle_errors
def validate_cmd(target, runtimes, data, limit, data_root, gate, out, threads, engine, emulate_cpu, quiet):
    """Run TARGET (a train-export run directory or an .onnx) in every runtime and gate on parity.

    Exits 0 when the gate passes, 7 when it fails (the reports are written either way): every quantized activation
    checked layer by layer, top-1 agreement and accuracy end to end, the integer-kernel census (docs/validate.md).
    """
    from ..validate.validate import ValidateConfig, validate

    cfg = ValidateConfig(target=target, runtimes=tuple(r.strip() for r in runtimes.split(",") if r.strip()),
                         data=data, limit=limit, data_root=data_root, gate=gate, out=out, threads=threads,
                         progress=not quiet, engine=engine, emulate_cpu=emulate_cpu)
    report = validate(cfg)
    click.echo(summary(report))


def summary(report: dict) -> str:
    """The lines ``validate`` prints: the verdict, then one line per runtime and per part of the gate."""
    from ..isa import describe
    from ..validate.verdict import layer_thresholds, portability_text, runtime_thresholds, status, verdict_word

    lines = [f"validation of {report['model']} on {report['data']} ({report['samples']} images): "
             f"{verdict_word(report['passed'])}",
             f"  {report['reference']:<28} accuracy {report['reference_accuracy'] if report['labelled'] else 'n/a'}"]
    for name, r in report["runtimes"].items():
        acc = f"{r['accuracy']:.2f} %" if r["accuracy"] is not None else "n/a"
        lines.append(f"  {name:<28} accuracy {acc}  agreement {r['top1_agreement']:.3f} % ({runtime_thresholds(r)})  "
                     f"max {r['max_diff_steps']} output steps (not gated)  {status(r['passed'])}")
    layers = report["layers"]
    if layers is not None:
        lines.append(f"  {'layer-local check':<28} {len(layers['layers'])} activations, worst "
                     f"{layers['worst_steps']:g} step, {layers['worst_mismatch']:.4%} of elements "
                     f"(gate {layer_thresholds(report['gate'])})  {status(layers['passed'])}")
    if report["census"] is not None:
        c = report["census"]
        lines.append(f"  {'integer census':<28} {c['integer_compute']} integer Conv/Gemm, {len(c['float_compute'])} "
                     f"float  {status(c['all_integer'])}")
    if report.get("pair_sums") is not None:
        lines.append(f"  {'portability':<28} {portability_text(report['pair_sums'], report.get('portable'))}")
    if report.get("cpu"):
        lines.append(f"  {'checked on':<28} {describe(report['cpu'])}")
    for name, why in report["skipped"].items():
        lines.append(f"  {name:<28} skipped: {why}")
    if report.get("changed_since_run"):
        lines.append(f"  note: {', '.join(report['changed_since_run'])} changed since the run wrote "
                     f"{'them' if len(report['changed_since_run']) > 1 else 'it'} (sha256 differs from manifest.json)")
    return "\n".join(lines)
