"""The ``dfq-deploy`` command group. Heavy imports happen inside each command, so ``--help`` stays fast."""

from __future__ import annotations

import click

from .. import __version__
from .pretrain import pretrain
from .train_export import train_export


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dfq-deploy")
def main():
    """Data-free low-bit quantization of CNNs, integer ONNX export, and cross-runtime parity checks."""


main.add_command(pretrain)
main.add_command(train_export)
