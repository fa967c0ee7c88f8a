"""The ``dfq-deploy`` command group. Heavy imports happen inside each command, so ``--help`` stays fast."""

from __future__ import annotations

import click

from .. import __version__
from .compile_cmd import compile_cmd
from .export_cmd import export_cmd
from .inspect_cmd import inspect_model
from .pretrain import pretrain
from .train_export import train_export
from .validate_cmd import validate_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dfq-deploy")
def main():
    """Data-free low-bit quantization of CNNs, integer ONNX export, and cross-runtime parity checks."""
    _quiet_library_noise()


def _quiet_library_noise() -> None:
    """Hide import-time chatter of our dependencies that a user can do nothing about."""
    import logging
    import warnings

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found"
    for category in (UserWarning, FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(brevitas|torch\.onnx|torch\.fx)(\..*)?")
    warnings.filterwarnings("ignore", message=".*fast_hadamard_transform.*")


main.add_command(pretrain)
main.add_command(train_export)
main.add_command(export_cmd)
main.add_command(compile_cmd)
main.add_command(inspect_model)
main.add_command(validate_cmd)
