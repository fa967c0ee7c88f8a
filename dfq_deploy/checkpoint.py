"""Training checkpoints, and stopping cleanly on SIGINT / SIGTERM.

A recipe is a sequence of *stages* (ZeroQ inversion, generator warm-up, block reconstruction, KD steps). Each stage
keeps one *section* of the run's checkpoint: everything needed to continue the stage from where it was (its modules'
and optimisers' state, every random generator's state, its history so far) or, once the stage is complete, to skip
it. Work that is deterministic and cheap (calibration, building quantized teachers) is not stored: a resumed run
redoes it exactly, which is what makes a resumed run **bit-identical** to an uninterrupted one on the CPU.

The checkpoint is one file, ``checkpoint.pt`` in the run's partial folder, rewritten atomically (temporary file,
fsync, ``os.replace``): a kill at any moment leaves the previous complete checkpoint or the new one. It holds only
tensors and plain Python data and is read back with ``torch.load(..., weights_only=True)``: nothing is unpickled.

When a checkpoint is written: every ``every`` steps of a step loop (generator warm-up, KD), after every batch of
inverted images and every reconstructed block, and at once on SIGINT / SIGTERM, after which the run stops with
:class:`RunInterrupted` (exit code 128 + the signal's number) and keeps its partial folder for ``--resume``.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import ConfigError, DfqDeployError
from .files import atomic_path

CHECKPOINT = "checkpoint.pt"
FORMAT = 1


class RunInterrupted(DfqDeployError):
    """The run was stopped by a signal; its checkpoint is saved and ``--resume`` continues it."""

    exit_code = 130

    def __init__(self, message: str, hint: str | None = None, signum: int = signal.SIGINT):
        super().__init__(message, hint)
        self.signum = signum
        self.exit_code = 128 + int(signum)


class Checkpointer:
    """The checkpoint of one run: sections by stage name, saved atomically into ``folder``.

    A stage calls :meth:`resumed` once at its start (None: start from scratch) and :meth:`step` at each of its step
    boundaries; :meth:`save` writes a section unconditionally (a stage's end).
    """

    def __init__(self, folder: str | Path | None, every: int = 50, sections: dict | None = None):
        if every < 0:
            raise ConfigError(f"checkpoint interval must be >= 0 steps, not {every}",
                              hint="use --checkpoint-every N (0 = only on SIGINT / SIGTERM and at stage boundaries)")
        self.folder = Path(folder) if folder is not None else None
        self.every = every
        self.sections: dict[str, Any] = dict(sections or {})
        self.stop_signal: int | None = None
        self.saves = 0

    # -- reading ------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path, every: int = 50) -> "Checkpointer":
        """The checkpoint in ``folder`` (an empty one when there is none).

        Raises:
            ConfigError: the file is not a checkpoint this version can read.
        """
        path = Path(folder) / CHECKPOINT
        if not path.exists():
            return cls(folder, every)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
            raise ConfigError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})",
                              hint=f"remove {path.parent} and start the run again") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("sections"), dict):
            raise ConfigError(f"{path} is not a dfq-deploy checkpoint of format {FORMAT}",
                              hint=f"remove {path.parent} and start the run again")
        return cls(folder, every, data["sections"])

    def resumed(self, stage: str) -> Any | None:
        """The saved state of ``stage`` (None: the stage starts from scratch)."""
        return self.sections.get(stage)

    def describe(self) -> str:
        """Where the saved run stands, e.g. ``kd step 100``, for messages."""
        if not self.sections:
            return "no checkpoint"
        stage, state = list(self.sections.items())[-1]
        where = state.get("step") if isinstance(state, dict) else None
        return f"{stage} step {where}" if where is not None else stage

    # -- writing ------------------------------------------------------------------------------------------------
    def save(self, stage: str, state: Any) -> None:
        """Store ``stage``'s state (last in order) and write the whole checkpoint atomically."""
        self.sections.pop(stage, None)
        self.sections[stage] = state
        self.saves += 1
        if self.folder is None:
            return
        with atomic_path(self.folder / CHECKPOINT, mode=0o600) as tmp:
            torch.save({"format": FORMAT, "sections": self.sections}, tmp)

    def step(self, stage: str, done: int, state_fn: Callable[[], Any], total: int | None = None) -> None:
        """At a step boundary (``done`` steps of ``stage`` complete): save every ``every`` steps, at the stage's
        last step, and on a pending stop signal, after which :class:`RunInterrupted` is raised."""
        due = self.stop_signal is not None or (self.every > 0 and done % self.every == 0) or done == total
        if due:
            self.save(stage, state_fn())
        self.raise_if_stopped(stage, done)

    def unit_done(self, stage: str, done: int, state_fn: Callable[[], Any]) -> None:
        """A unit of work of ``stage`` is complete (a batch of inverted images, a reconstructed block): always
        saved, then a pending stop signal raises :class:`RunInterrupted`."""
        self.save(stage, state_fn())
        self.raise_if_stopped(stage, done)

    def raise_if_stopped(self, stage: str, done: int | None = None) -> None:
        if self.stop_signal is not None:
            name = signal.Signals(self.stop_signal).name
            where = f"{stage} step {done}" if done is not None else stage
            raise RunInterrupted(f"stopped by {name} at {where}; checkpoint saved", signum=self.stop_signal)

    # -- signals ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def stop_on_signals(self):
        """While inside: SIGINT / SIGTERM ask the run to stop at its next step boundary (after a checkpoint); a
        second signal stops it at once. Only the main thread can install handlers; elsewhere this does nothing."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            if self.stop_signal is not None:  # asked twice: stop now
                raise KeyboardInterrupt
            self.stop_signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


class _NoCheckpoint(Checkpointer):
    """Used when a recipe runs without a checkpoint (the Python API, benchmarks): never saves, never resumes."""

    def __init__(self):
        super().__init__(None, 0)

    def save(self, stage: str, state: Any) -> None:
        pass

    def step(self, stage, done, state_fn, total=None) -> None:
        pass

    def unit_done(self, stage, done, state_fn) -> None:
        pass

    def stop_on_signals(self):
        return contextlib.nullcontext(self)  # nothing saves: the signals keep their usual effect


NO_CHECKPOINT = _NoCheckpoint()


def rng_states(*generators: torch.Generator) -> dict:
    """The state of torch's global CPU generator and of ``generators`` (the recipes' own CPU streams); on CUDA also
    the current device's generator."""
    out = {"torch": torch.get_rng_state(), "gens": [g.get_state() for g in generators]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_states(saved: dict, *generators: torch.Generator) -> None:
    torch.set_rng_state(saved["torch"])
    for g, s in zip(generators, saved["gens"], strict=True):
        g.set_state(s)
    if "cuda" in saved and torch.cuda.is_available():
        torch.cuda.set_rng_state(saved["cuda"])


def cpu_state(module_or_opt) -> dict:
    """A state dict with every tensor copied to the CPU (a checkpoint does not keep references to live tensors)."""
    def copy(v):
        if isinstance(v, torch.Tensor):
            return v.detach().to("cpu", copy=True)
        if isinstance(v, dict):
            return {k: copy(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(copy(x) for x in v)
        return v

    return copy(module_or_opt.state_dict())
