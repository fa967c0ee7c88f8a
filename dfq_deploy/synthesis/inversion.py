"""Model inversion: optimise the pixels of random images until a teacher labels them as asked and its BatchNorm
layers see their stored statistics (ZeroQ without labels; DeepInversion/LIS with labels and several teachers)."""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checkpoint import NO_CHECKPOINT, Checkpointer
from ..device import module_device
from ..errors import TrainingError
from .bn_stats import BNStatsLoss, affine_batchnorm

log = logging.getLogger("dfq_deploy")


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation (mean absolute difference of neighbouring pixels): a smoothness prior."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


# pick(iteration, iterations_per_batch, rng) -> index of the teacher that labels this iteration's batch
TeacherPicker = Callable[[int, int, torch.Generator], int]


@contextlib.contextmanager
def _no_weight_grads(models):
    """Only the pixels learn: without weight gradients each backward pass skips the convolutions' weight gradients.
    The images' gradients are bit-identical, and a step is noticeably faster (docs/benchmarks.md)."""
    frozen = [p for m in {id(m): m for m in models}.values() for p in m.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


class _Lowest:
    """The images of a batch at its lowest finite loss so far, kept so that a diverging inversion (a loss that
    overflows to inf or NaN, as in a network whose BatchNorm statistics amplify a small step enormously) ends with
    usable images instead of NaN ones. An inversion that never diverges returns its last images, as before."""

    def __init__(self):
        self.loss, self.x = math.inf, None

    def offer(self, loss: float, x: torch.Tensor) -> bool:
        """False when ``loss`` is not finite; otherwise keeps a copy of ``x`` if ``loss`` is the lowest so far."""
        if not math.isfinite(loss):
            return False
        if loss < self.loss:
            self.loss, self.x = loss, x.detach().clone()
        return True

    def images(self, step: int, batch: int, desc: str) -> torch.Tensor:
        if self.x is None:
            raise TrainingError(f"{desc}: the loss is not finite on the first step of batch {batch}: the teacher's "
                                "BatchNorm statistics or activations overflow on noise images",
                                hint="calibrate on noise instead (--set source=noise), or check the teacher's weights")
        log.warning("%s: the loss overflowed at step %d of batch %d; the batch keeps its images of lowest loss "
                    "(%.4g); a lower learning rate (zeroq_lr) may invert further", desc, step, batch, self.loss)
        return self.x


def invert_images(bn_model: torch.nn.Module, num_images: int, img_shape: tuple[int, int, int], steps: int, *,
                  num_classes: int | None = None, teachers: Sequence[torch.nn.Module] = (),
                  pick: TeacherPicker | None = None, batch_size: int = 128, lr: float = 0.1,
                  bns_weight: float = 1.0, ce_weight: float = 1.0, tv_weight: float = 0.0, seed: int = 0,
                  pixel_range: tuple[Sequence[float], Sequence[float]] | None = None,
                  progress: bool = True, desc: str = "inverting images",
                  on_iter: Callable[[dict], None] | None = None, checkpoint: Checkpointer | None = None,
                  stage: str = "inversion", aux=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return ``num_images`` images (and their labels when ``num_classes`` is given), optimised in batches.

    Each batch starts as standard-normal noise and is optimised for ``steps`` Adam iterations (cosine learning rate)
    on ``bns_weight * BNS(bn_model) + ce_weight * CE(teacher_k(x), y) + tv_weight * TV(x)``. ``teacher_k`` is
    ``teachers[pick(...)]`` (default: ``bn_model`` itself); without ``num_classes`` there is no CE term (ZeroQ).
    ``pixel_range`` = (per-channel low, per-channel high) keeps every pixel inside the range a real normalised
    image can take (projected after each step); without it pixels are unbounded and can drift far outside it,
    which then inflates any activation range calibrated on them.
    ``on_iter`` receives each iteration's losses (tests and logs use it).
    ``checkpoint``: each finished batch is saved as section ``stage`` (with ``aux.state()``, the caller's own
    record of the iterations, when ``aux`` is given); a saved section is continued from its next batch and handed
    back through ``aux.load``.
    """
    ck = checkpoint or NO_CHECKPOINT
    rng = torch.Generator().manual_seed(seed)  # drawn on the CPU, then moved: every device draws the same noise
    dev = module_device(bn_model)
    teachers = _in_eval_mode(bn_model, teachers)
    images, labels = [], []
    lo, hi = _pixel_bounds(pixel_range, img_shape, dev)
    n_batches = math.ceil(num_images / batch_size)
    bar = tqdm(total=n_batches * steps, desc=desc, disable=not progress)
    start = 0
    saved = ck.resumed(stage)
    if saved is not None:
        start, images, labels = _resumed(saved, rng, aux, dev)
        bar.update(start * steps)

    def state(done: int) -> dict:
        return {"step": done, "images": [t.cpu() for t in images], "labels": [t.cpu() for t in labels],
                "rng": rng.get_state(), "aux": aux.state() if aux is not None else None}

    weights = _Weights(bns=bns_weight, ce=ce_weight, tv=tv_weight)
    # the teachers are frozen here: no weight gradients, and each BatchNorm as the affine map it is in eval mode
    with _no_weight_grads((bn_model, *teachers)), affine_batchnorm(bn_model, *teachers), \
            BNStatsLoss(bn_model) as bns:
        for b in range(start, n_batches):
            n = min(batch_size, num_images - b * batch_size)
            x = torch.randn(n, *img_shape, generator=rng).to(dev)
            if lo is not None:
                x = torch.maximum(torch.minimum(x, hi), lo)
            x.requires_grad_(True)
            y = torch.randint(0, num_classes, (n,), generator=rng).to(dev) if num_classes else None
            objective = _Objective(bn_model, teachers, bns, weights)
            x = _optimise_batch(objective, x, y, steps, lr, pick, rng, (lo, hi), bar, on_iter,
                                stopped=lambda: ck.raise_if_stopped(stage, b), where=(b, desc))
            images.append(x.detach())
            if y is not None:
                labels.append(y)
            ck.unit_done(stage, b + 1, lambda: state(b + 1))
    bar.close()
    return torch.cat(images), (torch.cat(labels) if labels else None)


def _in_eval_mode(bn_model: torch.nn.Module, teachers: Sequence[torch.nn.Module]) -> list[torch.nn.Module]:
    """``bn_model`` and the teachers (default: ``bn_model`` itself) in eval mode; the teachers' list."""
    bn_model.eval()
    teachers = list(teachers) or [bn_model]
    for t in teachers:
        t.eval()
    return teachers


def _resumed(saved: dict, rng: torch.Generator, aux, dev) -> tuple[int, list, list]:
    """(the next batch, the images and labels made so far) of a saved section; restores ``rng`` and ``aux``."""
    start = saved["step"]
    images = [t.to(dev) for t in saved["images"]]
    labels = [t.to(dev) for t in saved["labels"]]
    rng.set_state(saved["rng"])
    if aux is not None:
        aux.load(saved["aux"])
    return start, images, labels


def _pixel_bounds(pixel_range, img_shape: tuple[int, int, int], dev) -> tuple[torch.Tensor | None, ...]:
    """(per-channel low, per-channel high) pixel tensors on ``dev`` from ``pixel_range``, or (None, None)."""
    if pixel_range is None:
        return None, None
    lo, hi = (torch.as_tensor(v, dtype=torch.float32).reshape(-1, 1, 1).to(dev) for v in pixel_range)
    if lo.numel() not in (1, img_shape[0]) or hi.numel() != lo.numel() or bool((lo >= hi).any()):
        raise ValueError(f"pixel_range needs 1 or {img_shape[0]} low < high values, got {pixel_range}")
    return lo, hi


@dataclass(frozen=True)
class _Weights:
    bns: float  # weight of the BatchNorm-statistics loss
    ce: float   # weight of the teacher's cross-entropy against the asked labels
    tv: float   # weight of the total-variation prior


@dataclass(frozen=True)
class _Objective:
    """The inversion loss of a batch: ``bn_model``'s BatchNorm statistics (``bns``), the cross-entropy of the picked
    teacher against the asked labels, and the total variation, weighted."""

    bn_model: torch.nn.Module
    teachers: list
    bns: BNStatsLoss
    weights: _Weights

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None, k: int) -> tuple[torch.Tensor, dict]:
        """(loss, its terms for ``on_iter``) of images ``x`` labelled ``y`` (or None), teacher ``k``."""
        w = self.weights
        self.bns.reset()
        logits = self.bn_model(x)
        loss_bn = self.bns.loss()
        loss = w.bns * loss_bn
        terms = {"bns": loss_bn.item(), "teacher": k}
        if y is not None and w.ce:
            t_logits = logits if self.teachers[k] is self.bn_model else self.teachers[k](x)
            ce = F.cross_entropy(t_logits, y)
            loss = loss + w.ce * ce
            terms["ce"] = ce.item()
        if w.tv:
            loss = loss + w.tv * tv_loss(x)
        return loss, terms


def _optimise_batch(objective: _Objective, x: torch.Tensor, y: torch.Tensor | None, steps: int, lr: float,
                    pick: TeacherPicker | None, rng: torch.Generator, bounds, bar, on_iter, stopped, where
                    ) -> torch.Tensor:
    """``steps`` Adam iterations (cosine learning rate) of the pixels ``x`` on ``objective``, projected into
    ``bounds`` (low, high; None: unbounded); the batch's images. ``where`` = (batch index, description) for
    messages; ``stopped()`` raises when the run must stop."""
    lo, hi = bounds
    opt = torch.optim.Adam([x], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    kept = _Lowest()
    for i in range(steps):
        k = pick(i, steps, rng) if pick else 0
        loss, terms = objective(x, y, k)
        if not kept.offer(loss.item(), x):  # diverged: the batch ends with its lowest-loss images
            x = kept.images(i, *where)
            bar.update(steps - i)
            return x
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if lo is not None:
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, hi), lo))
        if on_iter is not None:
            on_iter(terms)
        bar.update()
        stopped()  # the last finished batch is saved already
    return x
