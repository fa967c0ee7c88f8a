"""`dfq-deploy train-export`: data-free low-bit training -> integer ONNX -> parity check, in one command."""

from __future__ import annotations

import click

from ..targets import TARGETS
from ..device import DEVICE_HELP
from ._common import gate_options, handle_errors


@click.command("train-export")
@click.option("--target", type=click.Choice(list(TARGETS)), default="onnxruntime", show_default=True,
              help="Runtime to deploy to; chooses the export profile and the parity check.")
@click.option("--teacher", default=None, help="Model card (.json from `dfq-deploy pretrain`). Default: the shipped "
              "ResNet-20 Fashion-MNIST teacher.")
@click.option("--recipe", default=None,
              help="Data-free recipe: ptq (default: ZeroQ calibration + block reconstruction), dmkd, dfqf, "
              "adversarial, lis, or gdfq.")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Recipe YAML: `recipe: <name>` plus any of its config fields (command-line options win).")
@click.option("--bits", default="W4A4", show_default=True, help="Student bit widths, e.g. W4A4, W8A8, W3A3, or 4.")
@click.option("--first-last-bits", default=8, show_default=True,
              help="Bits of the first and last layers (weights and their inputs).")
@click.option("--per-tensor", is_flag=True, help="One weight scale per tensor instead of per output channel.")
@click.option("--steps", type=int, default=None, help="Student training steps (recipe default if omitted).")
@click.option("--warmup-steps", type=int, default=None, help="Generator-only steps before the student trains.")
@click.option("--batch-size", type=int, default=None, help="Synthetic images per step.")
@click.option("--seed", type=int, default=None, help="Random seed of the recipe.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any recipe config field, e.g. --set student_lr=0.002 (repeatable).")
@click.option("--eval-limit", type=int, default=None, help="Evaluate on the first N test images only.")
@click.option("--data-root", default=None, help="Folder with the evaluation files (default: Debian's install).")
@click.option("--out", default=None, help="Run directory (default runs/<time>-<recipe>-<bits>); must not exist.")
@click.option("--threads", type=int, default=None, help="CPU threads for torch and ONNX Runtime.")
@click.option("--device", default="auto", show_default=True,
              help=f"Where the recipe trains: {DEVICE_HELP}. Export and the parity check run on the CPU.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@gate_options
@handle_errors
def train_export(target, teacher, recipe, config_path, bits, first_last_bits, per_tensor, steps, warmup_steps,
                 batch_size, seed,
                 overrides, eval_limit, data_root, out, gate, threads, device, quiet):
    """Train a low-bit student without data, export integer QDQ ONNX, and check it against PyTorch."""
    from ..config import merge_recipe_options
    from ..errors import ConfigError
    from ..pipeline import TrainExportConfig, summary_text, train_export as run
    from ..quant import QuantScheme
    from ..recipes import DEFAULT_RECIPE, RECIPES

    flags = {"steps": steps, "warmup_steps": warmup_steps, "batch_size": batch_size, "seed": seed}
    # named options win over the YAML, --set wins over both
    recipe, options = merge_recipe_options(config_path, recipe, flags, overrides)
    recipe = recipe or DEFAULT_RECIPE
    if recipe in RECIPES:  # an unknown recipe name is reported by the pipeline, with the list of names
        fields = RECIPES[recipe][0].__dataclass_fields__
        for key in (k for k, v in flags.items() if v is not None and k not in fields):
            flag = "--" + key.replace("_", "-")
            hint = f"drop {flag}"
            if recipe == "ptq":
                hint = ("ptq has no training steps: use --set recon_iters=N for longer reconstruction, or pick a "
                        "training recipe, e.g. --recipe dmkd")
            raise ConfigError(f"{flag} does not apply to recipe {recipe} (it has no {key} field)", hint=hint)
    scheme = QuantScheme.from_tag(bits, first_last_bits=first_last_bits, per_channel=not per_tensor)
    cfg = TrainExportConfig(target=target, teacher=teacher, recipe=recipe, recipe_options=options, scheme=scheme,
                            eval_limit=eval_limit, data_root=data_root, out=out, gate=gate,
                            threads=threads, device=device, progress=not quiet)
    result = run(cfg)
    click.echo(summary_text(result.report))
    click.echo(f"run directory: {result.run_dir}")
