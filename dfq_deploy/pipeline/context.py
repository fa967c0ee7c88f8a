"""What a run carries from stage to stage: its resolved inputs, its directory, its checkpointer, the processes it
runs in and how long each stage took."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import NO_CHECKPOINT, Checkpointer
from ..quant import QuantScheme
from ..rundir import RunDir
from ..targets import Target
from .config import TrainExportConfig


@dataclass
class Inputs:
    """Everything a run needs, resolved and validated before any training starts."""

    target: Target
    scheme: QuantScheme
    recipe_cfg: Any
    recipe_fn: Any
    runtime: tuple[type, str, str | None]   # (runtime class that checks parity, its report name, engine note)
    teacher: torch.nn.Module
    student: torch.nn.Module                # the quantized student, untrained (quantize_model of the teacher)
    card: Any
    card_path: Path
    eval_set: Any
    device: torch.device
    budget: dict = field(default_factory=dict)  # the teacher's cost and what the recipe's budget scaled


class Timings(dict):
    """Seconds per stage, in the order the stages ran (``report.json``'s ``timings_s``)."""

    @contextmanager
    def measure(self, name: str):
        """Record the time the block takes under ``name`` (only when it finishes: a failed stage has no time)."""
        start = time.time()
        yield
        self[name] = time.time() - start


@dataclass
class RunContext:
    """One run: its settings, its resolved inputs and, once it writes, its directory and checkpointer. ``world``:
    the processes of a multi-process run (None: one process); ``rd`` None: a helper process, which writes nothing."""

    cfg: TrainExportConfig
    inputs: Inputs
    rd: RunDir | None = None
    ck: Checkpointer = NO_CHECKPOINT
    world: Any = None
    timings: Timings = field(default_factory=Timings)
    # where a resumed run continued (its checkpoint's sections), taken before training adds to them
    resumed_from: str | None = None

    def __post_init__(self):
        if self.resumed_from is None and self.ck.sections:
            self.resumed_from = self.ck.describe()

    @property
    def run_dir(self) -> Path | None:
        """The folder the run writes to until it is complete (None: a helper process)."""
        return None if self.rd is None else self.rd.partial


@dataclass
class RunResult:
    run_dir: Path
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.report["gate"]["passed"])
