"""How the processes of a multi-process run (:mod:`dfq_deploy.distributed`) meet: all start training or none does;
every process trains; rank 0 runs the rest of the run and sends its verdict, which every other process takes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch

from .. import distributed
from ..errors import DfqDeployError
from . import stages
from .context import RunContext, RunResult


class PeerError(DfqDeployError):
    """Another process of a multi-process run failed; this one exits with the same code."""

    def __init__(self, message: str, exit_code: int, hint: str | None = None):
        super().__init__(message, hint)
        self.exit_code = exit_code


def start_together(error: DfqDeployError | None, rd=None) -> None:
    """Every process starts training only if every process could start: raise this process's ``error``, or a
    :class:`PeerError` naming another's; ``rd`` (rank 0's run directory) is discarded then."""
    problems = [p for p in distributed.all_objects(None if error is None else (error.exit_code, str(error)))
                if p is not None]
    if (error is not None or problems) and rd is not None:
        rd.discard()
    if error is not None:
        raise error
    if problems:
        raise PeerError(f"another process could not start: {problems[0][1]}", problems[0][0])


def student_digest(student: torch.nn.Module) -> str:
    """sha256 of the student's weights: every process must end training with the same."""
    h = hashlib.sha256()
    for k, v in student.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def gather_digests(student: torch.nn.Module) -> list[str]:
    """The student's digest on every process, by rank."""
    return distributed.all_objects(student_digest(student))


def lead(run: Callable[[], RunResult], final_dir: Path) -> RunResult:
    """Rank 0: ``run`` the rest of the run, and send its verdict (or its error's exit code and first line) to the
    other processes."""
    try:
        result = run()
    except BaseException as e:
        distributed.broadcast_object((getattr(e, "exit_code", 1), str(e).splitlines()[0] if str(e) else
                                      type(e).__name__, None, str(final_dir)))
        raise
    distributed.broadcast_object((0, "", result.report, str(result.run_dir)))
    return result


def follow(ctx: RunContext) -> RunResult:
    """A helper process (rank > 0): train with the others, then take rank 0's verdict."""
    trained = stages.train(ctx)
    gather_digests(trained.student)
    code, message, report, final = distributed.broadcast_object(None)
    if code:
        raise PeerError(f"rank 0: {message}", code)
    return RunResult(Path(final), report)
