"""Shared CLI plumbing: typed errors become a one-line message and a documented exit code, never a traceback."""

from __future__ import annotations

import functools
import sys

import click

from ..errors import DfqDeployError
from ..files import storage_failure


def handle_errors(fn):
    """The CLI's one error boundary. A typed project error prints its message and fix and exits with its code;
    Ctrl-C exits 130; anything else is a bug in dfq-deploy, not the user's doing: one line says so and where the
    full traceback was saved, and the exit code is 1. No traceback reaches the terminal."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DfqDeployError as e:
            click.echo(f"error: {e}", err=True)
            _record_exit_code(e.exit_code)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            _record_exit_code(130)
            sys.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise  # click's own usage errors and exits: it prints them (exit 2)
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] not in TRAIN_EXTRA_MODULES:
                _report_bug(e)
            click.echo(f"error: this command needs {e.name}, part of dfq-deploy's training extra, which is not "
                       "installed here\n  fix: pip install 'dfq-deploy[train]' (a deployment device needs it only "
                       "to train, export or validate a run directory; docs/jetson.md)", err=True)
            _record_exit_code(6)
            sys.exit(6)
        except Exception as e:  # noqa: BLE001 - the boundary: every other exception is reported as a bug
            failure = storage_failure(e.filename or "a file", e) if isinstance(e, OSError) else None
            if failure is None:
                _report_bug(e)
            click.echo(f"error: {failure}", err=True)  # the machine refused a write: the user's environment
            _record_exit_code(failure.exit_code)
            sys.exit(failure.exit_code)

    return wrapper


# modules of the `train` extra (pyproject.toml): missing on a deployment-only install
TRAIN_EXTRA_MODULES = {"brevitas", "torchvision", "onnxoptimizer", "pkg_resources"}


def _report_bug(e: BaseException):
    """One line saying the exception is a bug in dfq-deploy and where its traceback was saved; exit 1."""
    where = save_traceback()
    text = str(e).splitlines()[0][:300] if str(e) else ""
    click.echo(f"internal error: {type(e).__name__}{': ' + text if text else ''}\n"
               f"  this is a bug in dfq-deploy, not a problem with your input; the full traceback is in "
               f"{where} (please attach it to a bug report)", err=True)
    _record_exit_code(1)
    sys.exit(1)


def save_traceback() -> str:
    """Write the current exception's traceback to a new file in the temporary folder; its path (or why not)."""
    import os
    import tempfile
    import time
    import traceback

    try:
        fd, path = tempfile.mkstemp(prefix=f"dfq-deploy-crash-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(" ".join(sys.argv) + "\n\n")
            traceback.print_exc(file=f)
        return path
    except OSError as err:
        return f"(not saved: {err})"


EXIT_CODE_FILE = "DFQ_DEPLOY_EXIT_CODE_FILE"


def _record_exit_code(code: int) -> None:
    """Under ``--nproc``: rank 0 leaves its exit code for the launching command (torchrun itself exits with 1 when
    a worker fails, whatever the worker's code)."""
    import os

    path = os.environ.get(EXIT_CODE_FILE)
    if path and os.environ.get("RANK", "0") == "0":
        with open(path, "w") as f:
            f.write(str(code))


def run_under_torchrun(nproc: int, argv: list[str]) -> int:
    """Run this command again in ``nproc`` processes with the standard launcher (``torch.distributed.run``, i.e.
    torchrun, single node) and return rank 0's exit code."""
    import os
    import subprocess
    import tempfile

    fd, code_file = tempfile.mkstemp(prefix="dfq-deploy-exit-")
    os.close(fd)
    try:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "dfq_deploy", *argv]
        env = {**os.environ, EXIT_CODE_FILE: code_file}
        rc = subprocess.call(cmd, env=env)
        text = open(code_file).read().strip()
        return int(text) if rc != 0 and text.isdigit() else rc
    finally:
        os.unlink(code_file)


def without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == name:
            skip = True
            continue
        if a.startswith(name + "="):
            continue
        out.append(a)
    return out


def command_line() -> str:
    """The command as typed, for model cards and reports."""
    import shlex

    return " ".join(["dfq-deploy", *map(shlex.quote, sys.argv[1:])])


def gate_options(fn):
    """The parity gate's options, shared by ``train-export`` and ``validate`` (defaults read from ``Gate``); the
    command receives a ready ``gate`` argument."""
    from ..validate.gate import Gate

    d = Gate()
    options = [
        click.option("--min-agreement", type=float, default=d.min_agreement, show_default=True,
                     help="Gate: top-1 agreement with the reference (%)."),
        click.option("--max-accuracy-diff", type=float, default=d.max_accuracy_diff, show_default=True,
                     help="Gate: accuracy difference to the reference (points)."),
        click.option("--layer-max-mismatch", type=float, default=d.layer_max_mismatch, show_default=True,
                     help="Gate: share of a quantized activation's elements that may sit on another code, with no "
                          "rounding tie to explain it, when the runtime gets the reference's inputs."),
        click.option("--layer-samples", type=int, default=d.layer_samples, show_default=True,
                     help="Images the layer-local check runs on."),
        click.option("--max-steps", type=float, default=None,
                     help="Also gate the largest logit difference in output quantization steps (off by default: "
                          "rounding ties compound with depth; see docs/validate.md)."),
    ]

    @handle_errors  # a bad threshold is a one-line config error like any other
    @functools.wraps(fn)
    def wrapper(*args, min_agreement, max_accuracy_diff, layer_max_mismatch, layer_samples, max_steps, **kwargs):
        gate = Gate(min_agreement=min_agreement, max_accuracy_diff=max_accuracy_diff,
                    layer_max_mismatch=layer_max_mismatch, layer_samples=layer_samples, max_logit_steps=max_steps)
        return fn(*args, gate=gate, **kwargs)

    for opt in reversed(options):
        wrapper = opt(wrapper)
    return wrapper
