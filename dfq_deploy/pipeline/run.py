"""A run from start to end: :func:`train_export` and :func:`resume_run` open the run directory, and
:func:`run_stages` runs the stages in it (train, export, check, write), commits it and applies the gate."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from .. import __version__, distributed
from ..checkpoint import NO_CHECKPOINT, Checkpointer
from ..device import device_name, resolve_device
from ..errors import DfqDeployError, ModelError
from ..files import file_sha256
from ..rundir import create_run_dir, read_run_config, reopen_run_dir, write_run_config
from . import rendezvous, stages
from .config import TrainExportConfig
from .context import RunContext, RunResult
from .failures import KeepOnFailure, training_failures
from .report import build_report, write_run_files
from .resolve import resolve

log = logging.getLogger("dfq_deploy")


def train_export(cfg: TrainExportConfig) -> RunResult:
    """Train a low-bit student data-free, export it for ``cfg.target``, and check parity with PyTorch.

    Writes a run directory (``model.onnx``, ``student.safetensors``, ``report.json``, ``summary.txt``,
    ``train.log``, ``losses.png``) atomically: on failure nothing is left behind under its name. Training is
    checkpointed every ``cfg.checkpoint_every`` steps; SIGINT / SIGTERM stop it at the next step boundary with the
    checkpoint saved, and :func:`resume_run` continues it.

    Returns:
        RunResult with the run directory and the report.

    Raises:
        ConfigError, ModelError, DataError: bad input, before training starts.
        RuntimeUnavailableError: the target runtime is missing here (checked first).
        RunInterrupted: stopped by a signal; the partial run is kept for ``--resume``.
        ParityError: the runtime disagrees with the PyTorch reference beyond the gate (the run is kept).
    """
    if distributed.launched():
        return _train_export_distributed(cfg)
    inp = resolve(cfg)
    # the run must not depend on the folder it is resumed from: the teacher's card is kept as an absolute path
    cfg = replace(cfg, teacher=str(inp.card_path.resolve()))
    rd = create_run_dir(cfg.out, cfg.recipe, inp.scheme.tag)
    try:
        write_run_config(rd, _run_record(cfg, inp))
    except BaseException:
        rd.discard()
        raise
    return run_stages(RunContext(cfg, inp, rd, Checkpointer(rd.partial, cfg.checkpoint_every)))


def resume_run(run_dir: str | Path, *, device: str | None = None, threads: int | None = None,
               progress: bool | None = None, checkpoint_every: int | None = None) -> RunResult:
    """Continue an interrupted :func:`train_export` run from its last checkpoint, with the settings it started with
    (``run.json``). ``device``, ``threads``, ``progress`` and ``checkpoint_every`` may differ (on the CPU, a run
    resumed on the same device is bit-identical to an uninterrupted one).

    Raises:
        ConfigError: nothing to resume at ``run_dir``, its run is still alive, or its files are unreadable.
        plus everything :func:`train_export` raises.
    """
    rd = reopen_run_dir(run_dir)
    try:
        saved = read_run_config(rd)
        cfg = TrainExportConfig.from_dict(saved["config"])
        changes = {k: v for k, v in (("device", device), ("threads", threads), ("progress", progress),
                                     ("checkpoint_every", checkpoint_every)) if v is not None}
        cfg = replace(cfg, out=str(rd.final), **changes)
        if saved.get("dfq_deploy_version") != __version__:
            log.warning("resuming a run started by dfq-deploy %s with %s: the result may differ from an "
                        "uninterrupted run", saved.get("dfq_deploy_version"), __version__)
        ck = Checkpointer.load(rd.partial, cfg.checkpoint_every)
        inp = resolve(cfg)
        _same_teacher(saved, inp)
    except BaseException:
        rd.release()
        raise
    log.info("resuming %s from its checkpoint (%s)", rd.final, ck.describe())
    return run_stages(RunContext(cfg, inp, rd, ck))


def _teacher_sha256(inp) -> str:
    return file_sha256(inp.card_path.parent / inp.card.weights)


def _run_record(cfg: TrainExportConfig, inp, **extra) -> dict:
    """What ``run.json`` keeps for ``--resume``: the settings, and the teacher weights' hash they were trained
    against."""
    return {"format": 1, "dfq_deploy_version": __version__, "config": cfg.to_dict(),
            "teacher_sha256": _teacher_sha256(inp), **extra}


def _same_teacher(saved: dict, inp) -> None:
    """Refuse to resume against other teacher weights than the run started with: the student would finish trained
    against two teachers."""
    before, now = saved.get("teacher_sha256"), _teacher_sha256(inp)
    if before is not None and before != now:
        weights = inp.card_path.parent / inp.card.weights
        raise ModelError(f"the teacher weights {weights} changed since the run started (sha256 {before[:16]}... "
                         f"then, {now[:16]}... now)",
                         hint="restore the weights the run started with, or start a new run")


def run_stages(ctx: RunContext) -> RunResult:
    """Train, export, check parity and write the reports in ``ctx.rd``, then commit it (a failure discards it,
    or keeps it for ``--resume``) and apply the gate: a failed gate raises ``ParityError`` on the committed run."""
    from ..validate.gate import raise_for_gate

    start = time.time()
    cfg, inp, rd = ctx.cfg, ctx.inputs, ctx.rd
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    failure = KeepOnFailure()
    try:
        with run_log(rd.partial / "train.log"):
            log.info("dfq-deploy %s train-export: target=%s recipe=%s scheme=%s teacher=%s%s", __version__,
                     cfg.target, cfg.recipe, inp.scheme.tag, inp.card_path,
                     f" (resumed at {ctx.resumed_from})" if ctx.resumed_from else "")
            with training_failures(ctx, failure):
                trained = stages.train(ctx)
                per_rank = None if ctx.world is None else rendezvous.gather_digests(trained.student)
            exported = stages.export(ctx, trained.student)
            checked = stages.check(ctx, trained.student, exported)
            ctx.timings["total"] = time.time() - start
            report = build_report(ctx, trained, exported, checked, per_rank)
            write_run_files(ctx, report, trained, checked)
    except BaseException:
        if failure.keep:
            rd.release()
        else:
            rd.discard()
        raise
    rd.commit()
    result = RunResult(rd.final, report)
    raise_for_gate(checked.validation, rd.final / "validation.html",
                   hint="the run directory is kept; its validation.html names the faulty layer")
    return result


def _train_export_distributed(cfg: TrainExportConfig) -> RunResult:
    """One process of a ``torchrun`` launch (see :mod:`dfq_deploy.distributed`): every process trains; rank 0
    writes the run directory, exports and validates, and every process ends with rank 0's verdict."""
    device = resolve_device(cfg.device)
    world = distributed.init(device)
    try:
        device = distributed.local_device(device, world)
        cfg = replace(cfg, device=str(device), progress=cfg.progress and world.main)
        error, rd, inp = None, None, None
        try:
            inp = resolve(cfg)
            cfg = replace(cfg, teacher=str(inp.card_path.resolve()))
            if world.main:
                rd = create_run_dir(cfg.out, cfg.recipe, inp.scheme.tag)
                write_run_config(rd, _run_record(cfg, inp, world_size=world.size))
        except DfqDeployError as e:
            error = e
        rendezvous.start_together(error, rd)
        log.info("process %d of %d (%s, backend %s)", world.rank, world.size, device_name(device), world.backend)
        ctx = RunContext(cfg, inp, rd, NO_CHECKPOINT, world)
        result = rendezvous.lead(lambda: run_stages(ctx), rd.final) if world.main else rendezvous.follow(ctx)
        # every process reaches teardown before any leaves: a gloo peer that closes its sockets while another
        # still holds the group can abort that process at exit. (Only on success: after an error a peer may be
        # gone, and a barrier would wait for it.)
        distributed.barrier()
        return result
    finally:
        distributed.shutdown()


@contextmanager
def run_log(path: Path):
    """The package's log at INFO also goes to ``path`` (a run's ``train.log``) while the block runs."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()
