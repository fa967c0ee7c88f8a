"""Command-line interface: thin click commands over the Python API (one module per command)."""

import os
import sys

if not sys.stderr.isatty():
    # A log file or a CI's pipe, not a terminal: a progress bar that redraws many times a second would fill the log
    # with thousands of updates, so bars redraw at most every 30 s (their start and, for bars that stay, their end
    # with its time). tqdm reads this default when it is first imported, hence here, before any command imports it;
    # a TQDM_MININTERVAL the user set wins.
    os.environ.setdefault("TQDM_MININTERVAL", "30")

from .main import main  # noqa: E402 - after the progress default above

__all__ = ["main"]
