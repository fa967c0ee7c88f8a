"""`dfq-deploy inspect`: what an exported model is (metadata, per-layer bits) and what a runtime makes of it."""

from __future__ import annotations

import click

from ..targets import TARGETS
from ._common import handle_errors


@click.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--runtime", type=click.Choice([*TARGETS, "none"]), default="onnxruntime",
              show_default=True, help="onnxruntime: load it and list integer vs float kernels by name; tensorrt: "
              "check TensorRT's Q/DQ rules statically (and, with --build-engine, build it where TensorRT is "
              "installed); none: metadata only.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--build-engine", is_flag=True, help="With --runtime tensorrt where TensorRT is installed: also build "
              "the engine (cached), the parser's and builder's own proof. Off by default: a build takes minutes.")
@handle_errors
def inspect_model(model, runtime, as_json, build_engine):
    """Print MODEL's dfq-deploy metadata and prove which layers the runtime runs as integer kernels.

    Exits 0 when the runtime's requirement holds (every Conv/Gemm integer; no TensorRT rule broken), 5 when not.
    """
    import json

    from ..errors import ExportError
    from ..inspection import inspect_onnx, inspect_text

    report = inspect_onnx(model, runtime, build_engine=build_engine)
    click.echo(json.dumps(report, indent=2) if as_json else inspect_text(report))
    if not report["ok"]:
        raise ExportError(f"{model} does not meet {runtime}'s integer requirements (see above)",
                          hint="re-export with `dfq-deploy export RUN_DIR --profile " + runtime + "`")
