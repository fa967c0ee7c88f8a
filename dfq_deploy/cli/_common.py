"""Shared CLI plumbing: typed errors become a one-line message and a documented exit code, never a traceback."""

from __future__ import annotations

import functools
import sys

import click

from ..errors import DfqDeployError


def handle_errors(fn):
    """Run a command body; map DfqDeployError to its exit code and Ctrl-C to 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DfqDeployError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def command_line() -> str:
    """The command as typed, for model cards and reports."""
    import shlex

    return " ".join(["dfq-deploy", *map(shlex.quote, sys.argv[1:])])
