"""`dfq-deploy export`: write a run's student as QDQ ONNX for a runtime profile."""

from __future__ import annotations

import click

from ..targets import TARGETS
from ._common import handle_errors


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--profile", type=click.Choice(sorted({t.profile for t in TARGETS.values()})), required=True,
              help="onnxruntime: uint8 activations, int32 bias (CPU integer kernels); tensorrt: symmetric int8, "
              "float bias, no integer Clip (TensorRT explicit quantization).")
@click.option("--out", default=None, help="Destination .onnx (default RUN_DIR/model.<profile>.onnx).")
@handle_errors
def export_cmd(run_dir, profile, out):
    """Export the student of RUN_DIR (from `train-export`) for another runtime; the function stays the same."""
    from ..inspection import inspect_onnx, inspect_text
    from ..pipeline import export_run

    result = export_run(run_dir, profile, out)
    click.echo(f"wrote {result.path} ({profile} profile; rewrites: {result.passes})")
    click.echo(inspect_text(inspect_onnx(result.path, profile)))
