"""`dfq-deploy pretrain`: train the float teacher (the only command that reads a training split)."""

from __future__ import annotations

from pathlib import Path

import click

from ..device import DEVICE_HELP
from ._common import command_line, handle_errors


@click.command("pretrain")
@click.option("--out", default="teacher/resnet20_fmnist.json", show_default=True,
              help="Model card path; weights are written beside it as .safetensors.")
@click.option("--arch", default="resnet20", show_default=True, help="Zoo name of the float model.")
@click.option("--width", default=16, show_default=True, help="Channels of the first stage.")
@click.option("--epochs", default=20, show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", default=0.1, show_default=True, help="Peak SGD learning rate (cosine schedule).")
@click.option("--seed", default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="Use only the first N training images (quick checks).")
@click.option("--data-root", default=None, help="Folder with the Fashion-MNIST .gz files (default: Debian's).")
@click.option("--device", default="auto", show_default=True, help=f"Where to train: {DEVICE_HELP}.")
@click.option("--overwrite", is_flag=True, help="Replace an existing model card and weights at --out.")
@click.option("--resume", is_flag=True, help="Continue a stopped pretraining (its checkpoint is in <out>.partial/, "
              "saved after every epoch and on Ctrl-C / SIGTERM) with the same settings.")
@handle_errors
def pretrain(out, arch, width, epochs, batch_size, lr, seed, limit, data_root, device, overwrite, resume):
    """Train a float teacher on Fashion-MNIST's training split; write safetensors weights and a JSON model card."""
    from ..models.pretrain import PretrainConfig, pretrain_teacher

    cfg = PretrainConfig(arch=arch, width=width, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, limit=limit,
                         device=device)
    card = pretrain_teacher(cfg, out, command=command_line(), data_root=data_root, overwrite=overwrite,
                            resume=resume)
    # the card is written as .json whatever suffix --out has: print the path that exists
    click.echo(f"teacher {card.arch}: test accuracy {card.test_accuracy:.2f}% -> {Path(out).with_suffix('.json')}")
