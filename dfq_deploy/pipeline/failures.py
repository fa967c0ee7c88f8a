"""What a run does when training stops early: which failures keep the run directory for ``--resume``, and the
typed error an out-of-memory failure becomes."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import torch

from ..checkpoint import RunInterrupted
from ..device import device_name
from ..errors import TrainingError
from .context import RunContext

log = logging.getLogger("dfq_deploy")


def is_out_of_memory(e: BaseException) -> bool:
    """True for an allocation failure: CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    text = str(e)
    return isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text


class KeepOnFailure:
    """Whether a failed run keeps its directory (interrupted, or checkpointed before it ran out of memory) for
    ``--resume``; otherwise it is discarded."""

    def __init__(self):
        self.keep = False


@contextmanager
def training_failures(ctx: RunContext, decision: KeepOnFailure):
    """Around the training stage: a signal keeps the run (with the hint to resume it), a second Ctrl-C or running
    out of memory keeps it where a checkpoint was saved, and out of memory becomes a :class:`TrainingError`."""
    ck, final_dir = ctx.ck, ctx.rd.final
    try:
        yield
    except RunInterrupted as e:
        decision.keep = True
        e.hint = f"continue it with `dfq-deploy train-export --resume {final_dir}`"
        log.info("%s", e)
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: the last checkpoint is still there
        decision.keep = ck.saves > 0 or bool(ck.sections)
        raise
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        decision.keep = ck.saves > 0 or bool(ck.sections)
        raise TrainingError(f"out of memory while training on {device_name(ctx.inputs.device)}: "
                            f"{str(e).splitlines()[0][:200]}",
                            hint="lower --batch-size (and recon_batch / inversion_batch), or train on a device "
                                 "with more memory" + (f"; the checkpoint is kept: `dfq-deploy train-export "
                                                      f"--resume {final_dir}` after freeing memory"
                                                      if decision.keep else "")) from e
