"""Pretrain a float teacher on a real training split. The only code in dfq-deploy that reads training data:
it makes the teacher that data-free quantization then starts from (a user normally brings their own)."""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checkpoint import Checkpointer, cpu_state, rng_states, set_rng_states
from ..config import check_output_file
from ..data.augment import augment
from ..data.eval_set import evaluate
from ..device import device_name, resolve_device
from ..errors import ConfigError
from ..files import atomic_path, atomic_write
from .zoo import ModelCard, build_model
from ..progress import leave_inner_bars

FMNIST_MEAN = (0.2860,)
FMNIST_STD = (0.3530,)


@dataclass(frozen=True)
class PretrainConfig:
    arch: str = "resnet20"          # zoo name
    width: int = 16                 # first-stage channels
    epochs: int = 20                # passes over the 60k training images
    batch_size: int = 128
    lr: float = 0.1                 # SGD peak lr, cosine-annealed to 0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    pad: int = 2                    # random-crop padding (augmentation)
    flip: bool = True               # random horizontal flip (augmentation)
    seed: int = 0
    limit: int | None = None        # use only the first N training images (tests)
    device: str = "auto"            # auto | cpu | cuda | cuda:N (dfq_deploy.device)


def pretrain_teacher(cfg: PretrainConfig, out: str | Path, command: str = "", data_root: str | None = None,
                     progress: bool = True, overwrite: bool = False, resume: bool = False) -> ModelCard:
    """Train a float classifier on Fashion-MNIST and write ``<out>.safetensors`` + ``<out>.json`` (model card).

    Returns the model card (with the test accuracy). Files are written only once training has finished; existing
    ones are refused before training unless ``overwrite``. The training is checkpointed into ``<out>.partial/``
    after every epoch and at once on SIGINT / SIGTERM (then :class:`~dfq_deploy.checkpoint.RunInterrupted`);
    ``resume`` continues it there, with the same settings, to the same weights as an uninterrupted run on the CPU.
    """
    from ..data.eval_set import normalize_uint8
    from ..data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

    _check_settings(cfg)
    out = check_output_file(Path(out).with_suffix(".json"), "--out", overwrite=overwrite)
    check_output_file(out.with_suffix(".safetensors"), "--out (its weights file)", overwrite=overwrite)
    build_model(cfg.arch, width=cfg.width, in_channels=1, num_classes=10)  # an unknown arch fails before any work
    ck = _checkpointer(cfg, out, resume)
    dev = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    tr_x, tr_y = load_fashion_mnist("train", data_root)
    te_x, te_y = load_fashion_mnist("test", data_root)
    if cfg.limit:
        tr_x, tr_y = tr_x[: cfg.limit], tr_y[: cfg.limit]
    tr_x = normalize_uint8(tr_x, FMNIST_MEAN, FMNIST_STD)
    te_x = normalize_uint8(te_x, FMNIST_MEAN, FMNIST_STD)
    arch_kwargs = {"width": cfg.width, "in_channels": 1, "num_classes": 10}
    model = build_model(cfg.arch, **arch_kwargs).to(dev)
    ck.folder.mkdir(parents=True, exist_ok=True)  # only now: a run refused before training leaves nothing behind
    try:
        with ck.stop_on_signals():
            history, wall = _train(model, cfg, tr_x, tr_y, dev, gen, progress, ck)
    except BaseException:
        if not ck.sections:  # stopped before anything was saved: leave no empty partial folder behind
            shutil.rmtree(ck.folder, ignore_errors=True)
        raise
    acc = evaluate(model, te_x, te_y)
    out = Path(out)
    weights = out.with_suffix(".safetensors")
    card = ModelCard(
        arch=cfg.arch, arch_kwargs=arch_kwargs, input_shape=(1, 28, 28), mean=FMNIST_MEAN, std=FMNIST_STD,
        class_names=FASHION_MNIST_CLASSES, weights=weights.name, test_accuracy=round(acc, 2),
        eval_data="fashion-mnist-test (10000 images)", seed=cfg.seed, command=command,
        train={**asdict(cfg), "device": device_name(dev), "optimizer": "SGD nesterov, cosine lr", "history": history,
               "wall_time_s": round(wall, 1), "torch": torch.__version__},
    )
    _write_teacher(model, card, out)
    shutil.rmtree(ck.folder, ignore_errors=True)
    return card


def partial_folder(out: Path) -> Path:
    """Where a pretraining writing the card ``out`` keeps its checkpoint until it has finished."""
    return out.with_suffix(".partial")


# the settings a resumed pretraining must share with the one that was stopped (where it trains may change)
_RESUME_KEYS = [k for k in PretrainConfig.__dataclass_fields__ if k != "device"]


def _checkpointer(cfg: PretrainConfig, out: Path, resume: bool) -> Checkpointer:
    """The checkpoint of this pretraining: empty for a new one, the stopped one's with ``resume``.

    Raises:
        ConfigError: a stopped pretraining is there and ``resume`` was not asked (or the other way round), or its
            settings differ from ``cfg``.
    """
    folder = partial_folder(out)
    ck = Checkpointer.load(folder, every=0) if folder.is_dir() else None
    saved = ck.resumed("pretrain") if ck is not None else None
    if saved is None and resume:
        raise ConfigError(f"there is no stopped pretraining of {out} to resume ({folder} holds no checkpoint)",
                          hint="leave out --resume to start it")
    if saved is not None and not resume:
        raise ConfigError(f"a stopped pretraining of {out} is in {folder} (epoch {saved['epoch']} of "
                          f"{saved['config']['epochs']})", hint=f"add --resume to continue it, or remove {folder}")
    if saved is not None:
        mine = {k: v for k, v in asdict(cfg).items() if k in _RESUME_KEYS}
        theirs = {k: saved["config"].get(k) for k in _RESUME_KEYS}
        changed = [f"{k}={theirs[k]!r} -> {mine[k]!r}" for k in _RESUME_KEYS if mine[k] != theirs[k]]
        if changed:
            raise ConfigError(f"--resume with other settings than the stopped pretraining: {', '.join(changed)}",
                              hint="resume with the settings it started with, or remove " + str(folder))
        return ck
    return Checkpointer(folder, every=0)


def _check_settings(cfg: PretrainConfig) -> None:
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise ConfigError(f"bad pretrain settings epochs={cfg.epochs} batch={cfg.batch_size} lr={cfg.lr}",
                          hint="epochs and --batch-size >= 1, --lr > 0, e.g. --epochs 20 --lr 0.1")
    if cfg.limit is not None and cfg.limit < 1:  # a negative slice would silently drop images from the end
        raise ConfigError(f"--limit {cfg.limit} must be at least 1", hint="e.g. --limit 4096, or leave it out for "
                          "all training images")
    if cfg.epochs > 10_000 or cfg.batch_size > 65_536 or not math.isfinite(cfg.lr):
        raise ConfigError(f"pretrain settings past their ceilings: epochs={cfg.epochs} (<= 10000), batch="
                          f"{cfg.batch_size} (<= 65536), lr={cfg.lr} (finite)", hint="e.g. --epochs 20")


@dataclass
class _Epoch:
    """Where the training stands: the epoch under way, its order of images and its sums so far."""

    epoch: int = 0
    step: int = 0
    perm: torch.Tensor | None = None
    loss_sum: float = 0.0
    correct: int = 0


def _train(model: torch.nn.Module, cfg: PretrainConfig, tr_x: torch.Tensor, tr_y: torch.Tensor, dev,
           gen: torch.Generator, progress: bool, ck: Checkpointer) -> tuple[list[dict], float]:
    """SGD (Nesterov, cosine learning rate) over ``cfg.epochs`` epochs of augmented batches, continued from ``ck``'s
    section where it holds one; (the per-epoch history, the training's wall time over all sittings)."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    steps_per_epoch = math.ceil(len(tr_y) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * steps_per_epoch)
    history, at, before = [], _Epoch(), 0.0
    saved = ck.resumed("pretrain")
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        set_rng_states(saved["rng"], gen)
        history, before = list(saved["history"]), saved["wall_s"]
        at = _Epoch(saved["epoch"], saved["step"], saved["perm"], saved["loss_sum"], saved["correct"])
    t0 = time.time()

    def state() -> dict:
        return {"config": asdict(cfg), "model": cpu_state(model), "opt": cpu_state(opt), "sched": sched.state_dict(),
                "rng": rng_states(gen), "history": list(history), "wall_s": before + time.time() - t0,
                "epoch": at.epoch, "step": at.step, "perm": at.perm, "loss_sum": at.loss_sum, "correct": at.correct}

    while at.epoch < cfg.epochs:
        if at.perm is None:
            at.perm = torch.randperm(len(tr_y), generator=gen)
        bar = tqdm(range(at.step, steps_per_epoch), desc=f"pretrain epoch {at.epoch + 1}/{cfg.epochs}",
                   disable=not progress, leave=leave_inner_bars())
        for _ in bar:
            loss = _step(model, opt, sched, cfg, tr_x, tr_y, dev, gen, at)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            if ck.stop_signal is not None:  # asked to stop: save where the epoch stands, then stop
                ck.unit_done("pretrain", at.epoch, state)
        history.append({"epoch": at.epoch + 1, "train_loss": at.loss_sum / len(tr_y),
                        "train_acc": 100.0 * at.correct / len(tr_y), "elapsed_s": round(before + time.time() - t0, 1)})
        print(f"epoch {at.epoch + 1}: loss {history[-1]['train_loss']:.4f} train acc {history[-1]['train_acc']:.2f}% "
              f"({history[-1]['elapsed_s']} s)", flush=True)
        at = _Epoch(at.epoch + 1)
        ck.unit_done("pretrain", at.epoch, state)
    return history, before + time.time() - t0


def _step(model, opt, sched, cfg: PretrainConfig, tr_x, tr_y, dev, gen: torch.Generator, at: _Epoch) -> float:
    """One SGD step on the next batch of the epoch ``at`` (advanced in place); the batch's loss."""
    idx = at.perm[at.step * cfg.batch_size : (at.step + 1) * cfg.batch_size]
    model.train()
    x = augment(tr_x[idx].to(dev), cfg.pad, cfg.flip, gen)
    y = tr_y[idx].to(dev)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    at.step += 1
    at.loss_sum += loss.item() * len(y)
    at.correct += (logits.argmax(1) == y).sum().item()
    return loss.item()


def _write_teacher(model: torch.nn.Module, card: ModelCard, out: Path) -> None:
    """The weights, then the card, each written atomically: an interrupted run leaves no half-written teacher."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out.with_suffix(".safetensors")) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    atomic_write(out.with_suffix(".json"), card.to_json() + "\n")
