"""`dfq-deploy train-export`: data-free low-bit training -> integer ONNX -> parity check, in one command."""

from __future__ import annotations

import click

from ..device import DEVICE_HELP
from ..recipes.registry import recipe_help
from ..targets import TARGETS
from ._common import gate_options, handle_errors


@click.command("train-export")
@click.option("--target", type=click.Choice(list(TARGETS)), default="onnxruntime", show_default=True,
              help="Runtime to deploy to; chooses the export profile and the parity check.")
@click.option("--teacher", default=None, help="Model card (.json from `dfq-deploy pretrain`), or the name of a "
              "shipped teacher: resnet20_fmnist (the default) or mobilenetv2_fmnist.")
@click.option("--recipe", default=None, help=recipe_help())
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Recipe YAML: `recipe: <name>` plus any of its config fields (command-line options win).")
@click.option("--bits", default="W4A4", show_default=True, help="Student bit widths, e.g. W4A4, W8A8, W3A3, or 4.")
@click.option("--first-last-bits", default=8, show_default=True,
              help="Bits of the first and last layers (weights and their inputs).")
@click.option("--per-tensor", is_flag=True, help="One weight scale per tensor instead of per output channel.")
@click.option("--weight-grid", type=click.Choice(["narrow", "full"]), default=None,
              help="Sub-8-bit weight codes: narrow symmetric (the default), or every signed code (the lowest too) at "
                   "the smallest step that fits each channel (docs/recipes.md).")
@click.option("--vnni-only", is_flag=True,
              help="Keep full 8-bit weight codes after 8-bit activations (instead of 7-bit ones). The model is then "
              "exact only where int8 dot products accumulate in 32 bits (x86 VNNI / AMX, ARM, GPUs): ONNX Runtime's "
              "kernels on x86 CPUs without VNNI saturate. Recorded in the model's metadata and the report.")
@click.option("--steps", type=int, default=None, help="Student training steps (recipe default if omitted).")
@click.option("--warmup-steps", type=int, default=None, help="Generator-only steps before the student trains.")
@click.option("--batch-size", type=int, default=None, help="Synthetic images per step.")
@click.option("--seed", type=int, default=None, help="Random seed of the recipe.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any recipe config field, e.g. --set student_lr=0.002 or --set recon.iters=200 "
              "(repeatable).")
@click.option("--eval-data", default="fashion-mnist", show_default=True,
              help="Evaluation data (never used for training), as `validate --data`: fashion-mnist, imagefolder:PATH "
              "(one folder per class, resized and centre-cropped to the card's input_shape) or synthetic (random "
              "inputs of the card's shape: parity is checked, accuracy is not measured).")
@click.option("--eval-limit", type=int, default=None, help="Evaluate on the first N test images only.")
@click.option("--data-root", default=None, help="Folder with the evaluation files (default: Debian's install).")
@click.option("--out", default=None, help="Run directory (default runs/<time>-<recipe>-<bits>); must not exist.")
@click.option("--threads", type=int, default=None, help="CPU threads for torch and ONNX Runtime.")
@click.option("--device", default="auto", show_default=True,
              help=f"Where the recipe trains: {DEVICE_HELP}. Export and the parity check run on the CPU.")
@click.option("--checkpoint-every", type=int, default=None,
              help="Training steps between checkpoints [default: 50]; 0 = only at stage boundaries and on "
              "Ctrl-C / SIGTERM, which stop the run with its checkpoint saved.")
@click.option("--resume", "resume_dir", default=None, metavar="RUN_DIR",
              help="Continue an interrupted run (the --out it was given) from its last checkpoint, with the settings "
              "it started with; only --device, --threads, --checkpoint-every and --quiet may be given with it.")
@click.option("--nproc", type=int, default=None,
              help="Train in N processes on this machine (one per GPU with --device cuda, else CPU processes with "
              "gloo): runs `torchrun --standalone --nproc-per-node N -m dfq_deploy train-export ...`.")
@click.option("--dry-run", is_flag=True,
              help="Check every option, the recipe, the teacher and its weights, the evaluation data, the device and "
              "the output folder, print the resolved recipe, and exit without training or writing anything.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@gate_options
@handle_errors
def train_export(target, teacher, recipe, config_path, bits, first_last_bits, per_tensor, weight_grid, vnni_only,
                 steps, warmup_steps, batch_size, seed, overrides, eval_data, eval_limit, data_root, out, gate, threads,
                 device, checkpoint_every, resume_dir, nproc, dry_run, quiet):
    """Train a low-bit student without data, export integer QDQ ONNX, and check it against PyTorch."""
    import os
    import sys

    from .. import distributed
    from ._common import run_under_torchrun, without_option
    from ..pipeline import TrainExportConfig, preflight, summary_text, train_export as run
    from ..quant import QuantScheme

    _check_launch(nproc, resume_dir, dry_run)
    if resume_dir is not None:
        return _resume(resume_dir, device, threads, quiet, checkpoint_every)
    flags = {"steps": steps, "warmup_steps": warmup_steps, "batch_size": batch_size, "seed": seed}
    recipe, options = _recipe_options(config_path, recipe, flags, overrides)
    scheme = QuantScheme.from_tag(bits, first_last_bits=first_last_bits, per_channel=not per_tensor,
                                  portable=not vnni_only, **({"weight_grid": weight_grid} if weight_grid else {}))
    given = {"checkpoint_every": checkpoint_every} if checkpoint_every is not None else {}
    cfg = TrainExportConfig(target=target, teacher=teacher, recipe=recipe, recipe_options=options, scheme=scheme,
                            eval_data=eval_data, eval_limit=eval_limit, data_root=data_root, out=out, gate=gate,
                            threads=threads, device=device, progress=not quiet, **given)
    if dry_run:
        click.echo(preflight(cfg))
        return
    if nproc is not None and nproc > 1 and not distributed.launched():
        _check_nproc_fits(nproc, device)
        # the user's mistakes are reported here, once, rather than by every process under torchrun
        preflight(cfg)
        sys.exit(run_under_torchrun(nproc, without_option(sys.argv[1:], "--nproc")))
    result = run(cfg)
    if distributed.launched() and int(os.environ.get("RANK", "0")) != 0:
        return  # rank 0 prints the summary
    click.echo(summary_text(result.report))
    click.echo(f"run directory: {result.run_dir}")


def _check_nproc_fits(nproc: int, device: str) -> None:
    """Refuse more training processes than the machine has GPUs (on CUDA) or CPU cores (on the CPU), before any
    process starts: more would only share the same hardware, each with its own copy of the models, until the kernel
    kills them for memory."""
    import os

    from ..device import resolve_device
    from ..errors import ConfigError

    if resolve_device(device).type == "cuda":
        import torch

        have, what = torch.cuda.device_count(), "CUDA GPU(s)"
    else:
        have, what = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, \
            "CPU core(s) this process may use"
    if nproc > have:
        raise ConfigError(f"--nproc {nproc} is more processes than this machine's {have} {what}",
                          hint=f"use --nproc {have} or fewer")


def _check_launch(nproc, resume_dir, dry_run) -> None:
    """Refuse combinations of --nproc, --resume and --dry-run that cannot work, before any work."""
    from .. import distributed
    from ..errors import ConfigError

    if nproc is not None and (nproc < 1 or nproc > 1024):
        raise ConfigError(f"--nproc {nproc} must be between 1 and 1024", hint="e.g. --nproc 2")
    if nproc is not None and nproc > 1 and resume_dir is not None:
        raise ConfigError("--resume continues a run in one process", hint="drop --nproc")
    if resume_dir is not None and distributed.launched():
        raise ConfigError("--resume continues a run in one process, not under torchrun",
                          hint="run `dfq-deploy train-export --resume RUN_DIR` without torchrun")
    if resume_dir is not None and dry_run:
        raise ConfigError("--dry-run checks a new run's settings; --resume continues one", hint="drop one of them")


def _resume(resume_dir, device, threads, quiet, checkpoint_every) -> None:
    """``--resume``: continue a run with the settings it started with; only where and how it runs may change."""
    from ..errors import ConfigError
    from ..pipeline import resume_run, summary_text

    ctx = click.get_current_context()
    allowed = {"resume_dir", "device", "threads", "checkpoint_every", "quiet", "nproc"}
    given = [p.opts[0] for p in ctx.command.params if p.name not in allowed
             and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        raise ConfigError(f"--resume continues a run with the settings it started with; {', '.join(given)} "
                          "cannot change them", hint=f"drop {' '.join(given)}, or start a new run without --resume")
    source = ctx.get_parameter_source("device")
    result = resume_run(resume_dir, device=device if source == click.core.ParameterSource.COMMANDLINE else None,
                        threads=threads, progress=False if quiet else None, checkpoint_every=checkpoint_every)
    click.echo(summary_text(result.report))
    click.echo(f"run directory: {result.run_dir}")


def _recipe_options(config_path, recipe, flags: dict, overrides) -> tuple[str, dict]:
    """The recipe's name and options: the YAML, then the named options, then ``--set`` (each wins over the one
    before). A named option the recipe has no field for is refused with the recipe's own advice."""
    from ..config import merge_recipe_options
    from ..errors import ConfigError
    from ..recipes.registry import DEFAULT_RECIPE, RECIPES

    recipe, options = merge_recipe_options(config_path, recipe, flags, overrides)
    recipe = recipe or DEFAULT_RECIPE
    entry = RECIPES.get(recipe)  # an unknown recipe name is reported by the pipeline, with the list of names
    for key in (k for k, v in flags.items() if v is not None and entry is not None and not entry.takes(k)):
        flag = "--" + key.replace("_", "-")
        raise ConfigError(f"{flag} does not apply to recipe {recipe} (it has no {key} field)",
                          hint=entry.not_applicable_hint(flag))
    return recipe, options
