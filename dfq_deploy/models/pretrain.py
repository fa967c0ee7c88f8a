"""Pretrain a float teacher on a real training split. The only code in dfq-deploy that reads training data:
it makes the teacher that data-free quantization then starts from (a user normally brings their own)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

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
                     progress: bool = True, overwrite: bool = False) -> ModelCard:
    """Train a float classifier on Fashion-MNIST and write ``<out>.safetensors`` + ``<out>.json`` (model card).

    Returns the model card (with the test accuracy). Files are written only once training has finished; existing
    ones are refused before training unless ``overwrite``.
    """
    from ..data.eval_set import normalize_uint8
    from ..data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

    _check_settings(cfg)
    out = check_output_file(Path(out).with_suffix(".json"), "--out", overwrite=overwrite)
    check_output_file(out.with_suffix(".safetensors"), "--out (its weights file)", overwrite=overwrite)
    build_model(cfg.arch, width=cfg.width, in_channels=1, num_classes=10)  # an unknown arch fails before any work
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
    t0 = time.time()
    history = _train(model, cfg, tr_x, tr_y, dev, gen, progress)
    acc = evaluate(model, te_x, te_y)
    out = Path(out)
    weights = out.with_suffix(".safetensors")
    card = ModelCard(
        arch=cfg.arch, arch_kwargs=arch_kwargs, input_shape=(1, 28, 28), mean=FMNIST_MEAN, std=FMNIST_STD,
        class_names=FASHION_MNIST_CLASSES, weights=weights.name, test_accuracy=round(acc, 2),
        eval_data="fashion-mnist-test (10000 images)", seed=cfg.seed, command=command,
        train={**asdict(cfg), "device": device_name(dev), "optimizer": "SGD nesterov, cosine lr", "history": history,
               "wall_time_s": round(time.time() - t0, 1), "torch": torch.__version__},
    )
    _write_teacher(model, card, out)
    return card


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


def _train(model: torch.nn.Module, cfg: PretrainConfig, tr_x: torch.Tensor, tr_y: torch.Tensor, dev,
           gen: torch.Generator, progress: bool) -> list[dict]:
    """SGD (Nesterov, cosine learning rate) over ``cfg.epochs`` epochs of augmented batches; the per-epoch history."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    steps_per_epoch = math.ceil(len(tr_y) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * steps_per_epoch)
    history = []
    t0 = time.time()
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(tr_y), generator=gen)
        loss_sum, correct = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"pretrain epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=leave_inner_bars())
        for s in bar:
            idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            x = augment(tr_x[idx].to(dev), cfg.pad, cfg.flip, gen)
            y = tr_y[idx].to(dev)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / len(tr_y),
                        "train_acc": 100.0 * correct / len(tr_y), "elapsed_s": round(time.time() - t0, 1)})
        print(f"epoch {epoch + 1}: loss {history[-1]['train_loss']:.4f} train acc {history[-1]['train_acc']:.2f}% "
              f"({history[-1]['elapsed_s']} s)", flush=True)
    return history


def _write_teacher(model: torch.nn.Module, card: ModelCard, out: Path) -> None:
    """The weights, then the card, each written atomically: an interrupted run leaves no half-written teacher."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out.with_suffix(".safetensors")) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    atomic_write(out.with_suffix(".json"), card.to_json() + "\n")
