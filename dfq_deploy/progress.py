"""The progress bars' one policy, shared by every stage."""

from __future__ import annotations

import sys


def leave_inner_bars() -> bool:
    """Whether a stage's inner bar (an evaluation, a calibration pass) keeps its last line when it ends: not at a
    terminal, where it is cleared to keep the screen short; yes in a log file or a CI's pipe, where that last line
    is the stage's end and its time."""
    return not sys.stderr.isatty()
