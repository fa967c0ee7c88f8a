"""`dfq-deploy compile`: build the runtime's engine from an exported model on the device that will run it."""

from __future__ import annotations

import click

from ._common import handle_errors


@click.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", type=click.Choice(["tensorrt"]), required=True,
              help="tensorrt: build a TensorRT plan on this GPU (a Jetson or a server GPU); engines are not portable "
              "across GPUs or TensorRT versions, so run this where the model will run.")
@click.option("--out", default=None, help="Plan file (default: MODEL with .plan); its record is written beside it "
              "as .plan.json.")
@click.option("--workspace-mib", type=int, default=1024, show_default=True, help="Builder scratch memory.")
@click.option("--batch", default="1,64,500", show_default=True, metavar="MIN,OPT,MAX",
              help="The optimisation profile's batch sizes: the engine runs MIN..MAX and is tuned for OPT.")
@click.option("--overwrite", is_flag=True, help="Replace an existing plan at --out.")
@handle_errors
def compile_cmd(model, target, out, workspace_mib, batch, overwrite):
    """Build MODEL (a tensorrt-profile .onnx from `dfq-deploy export`) into an engine for this device.

    The plan is cached (~/.cache/dfq-deploy/trt, or $DFQ_DEPLOY_CACHE) under a key of the ONNX file's hash, every
    build option, the GPU's name and compute capability and the TensorRT version; a cached plan that does not
    deserialize or belongs to another GPU or version is rebuilt, never used. Run it with
    `dfq-deploy validate RUN_DIR --runtimes onnxruntime,tensorrt --engine PLAN`.
    """
    from pathlib import Path

    from ..errors import ConfigError
    from ..runtimes.trt import EngineOptions, compile_engine

    try:
        lo, opt, hi = (int(v) for v in batch.split(","))
    except ValueError:
        raise ConfigError(f"--batch {batch!r} is not MIN,OPT,MAX", hint="e.g. --batch 1,64,500") from None
    options = EngineOptions(workspace_mib=workspace_mib, min_batch=lo, opt_batch=opt, max_batch=hi)
    out = out or str(Path(model).with_suffix(".plan"))
    record = compile_engine(model, out, options, overwrite=overwrite)
    click.echo(f"wrote {record['plan']} ({record['plan_bytes']} bytes, {record['how']}) for {record['gpu']} "
               f"(compute capability {record['compute_capability']}), TensorRT {record['tensorrt']}; "
               f"record: {record['plan']}.json")
