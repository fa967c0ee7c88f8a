"""LIS: "Learning in School", multi-teacher knowledge inversion (seed paper 002, arXiv 2011.09899 v1).

Images are **inverted** (their pixels optimised) so that several teachers label them as asked while the float
teacher's BatchNorm layers see their stored statistics. Which teacher labels a batch at each iteration is sampled
from **hierarchical courses**: courses are ordered (default: the float teacher, then its W8A8 and W6A6 quantized
copies); course ``k`` of ``K`` opens at ``k/K`` of each batch's iterations, and each iteration samples an open
course uniformly, then a teacher in it uniformly. Early iterations shape the images with the float teacher alone;
later ones make them hold for the quantized decision boundaries too.

The set is written **once** to disk (``synthetic_set.safetensors`` in the run directory, or ``synthetic_set``)
and reused: the student's activation scales are calibrated on it (PTQ) and the student is trained by KD from the
float teacher on augmented mini-batches of it (QAT). Passing an existing ``synthetic_set`` skips synthesis, so
one set serves every model and bit width of the same input shape.

Choices the abstract leaves open, made here: the quantized teachers are calibrated data-free on the first batch
(which the float teacher inverts alone); BatchNorm statistics come from the float teacher (the quantized copies
have their BN folded into the convolutions); a total-variation prior keeps the images smooth; pixels stay inside
the range a real normalised image can take (``pixel_mean``/``pixel_std``, from the teacher's card). Without that
bound the inverted pixels drift far outside the real range, and the student's input quantizer, calibrated on them,
wastes most of its low-bit grid on values no real image takes.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Callable

import torch
from pydantic import Field, field_validator

from .. import __version__
from ..checkpoint import Checkpointer
from ..config import BatchSize, Count, Names, Rate, Weight, config_class
from ..errors import ConfigError
from ..quant import QuantScheme, calibrate, quantize_model
from ..synthesis import invert_images
from ..synthesis.synthetic_set import load_synthetic_set, save_synthetic_set
from .fixed_set import SetKDConfig, kd_on_images
from .loop import Timer, no_timer
from .options import PixelRange

log = logging.getLogger("dfq_deploy")


@config_class
class LISConfig(PixelRange, SetKDConfig):
    num_images: Annotated[Count, Field(ge=1, le=100_000)] = 512   # size of the synthetic set
    inversion_steps: Annotated[Count, Field(ge=1)] = 150   # Adam iterations per batch of images
    inversion_lr: Rate = 0.1                   # Adam learning rate on the pixels (cosine to 0)
    inversion_batch: BatchSize = 128           # images optimised together (BN statistics are per batch)
    bns_weight: Weight = 1.0                   # BN-statistics term
    tv_weight: Weight = 1e-3                   # total-variation prior
    # ordered courses (at most 16, 32 teachers in all); "fp" = float teacher, W<b>A<b> = PTQ copy
    courses: Names = ("fp", "W8A8,W6A6")
    synthetic_set: str = ""                    # existing set to reuse, or where to write the new one

    @field_validator("courses")
    @classmethod
    def _known_teachers(cls, courses):
        if len(courses) > 16 or sum(len(c.split(",")) for c in courses) > 32:
            raise ConfigError("lis: at most 16 courses and 32 teachers in all", hint="e.g. --set courses=[fp,W8A8]")
        if not courses or not any(courses):
            raise ConfigError("lis: courses must list at least one teacher", hint="e.g. --set courses=[fp,W8A8]")
        for course in courses:
            for tag in course.split(","):
                if tag.strip().lower() != "fp":
                    QuantScheme.from_tag(tag.strip())  # raises ConfigError for a bad tag
        return courses


def course_picker(courses: list[list[int]]):
    """Sampler over hierarchical courses (lists of teacher indices, easy first): course ``k`` of ``K`` is open
    from iteration ``k/K * total`` on; an open course is drawn uniformly, then a teacher in it uniformly."""
    def pick(i: int, total: int, rng: torch.Generator) -> int:
        open_courses = max(1, min(len(courses), 1 + (i * len(courses)) // max(1, total)))
        c = courses[int(torch.randint(0, open_courses, (1,), generator=rng))]
        return c[int(torch.randint(0, len(c), (1,), generator=rng))]
    return pick


def _teacher_fingerprint(teacher: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(teacher.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class _Record:
    """The inversion history across LIS's two inversion calls (every ``log_every``-th iteration); checkpointed with
    them."""

    def __init__(self, log_every: int, names: list[str]):
        self.log_every, self.names, self.count, self.history = log_every, names, 0, []

    def __call__(self, terms: dict) -> None:
        if self.count % self.log_every == 0:
            self.history.append({"phase": "inversion", "step": self.count, "gen_bns": terms["bns"],
                                 "gen_ce": terms.get("ce", float("nan")), "teacher": self.names[terms["teacher"]]})
        self.count += 1

    def state(self) -> dict:
        return {"count": self.count, "history": list(self.history)}

    def load(self, state: dict) -> None:
        self.count, self.history = state["count"], list(state["history"])


def synthesize_lis_set(teacher: torch.nn.Module, cfg: LISConfig, img_shape: tuple[int, int, int], num_classes: int,
                       progress: bool = True, checkpoint: Checkpointer | None = None, timer: Timer | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Invert ``cfg.num_images`` labelled images from the float teacher and its quantized copies (see module).
    ``checkpoint``: saved after each batch (sections ``inversion_float`` and ``inversion_courses``). ``timer``
    is entered (phase ``"inversion"``) around each of the two inversions of ``cfg.inversion_steps`` steps."""
    timer = timer or no_timer
    names: list[str] = []
    models: list[torch.nn.Module] = []
    courses: list[list[int]] = []
    for course in cfg.courses:
        idx = []
        for tag in (t.strip() for t in course.split(",")):
            name = "fp" if tag.lower() == "fp" else QuantScheme.from_tag(tag).tag
            if name not in names:
                names.append(name)
                models.append(teacher if name == "fp" else quantize_model(teacher, QuantScheme.from_tag(tag)))
            idx.append(names.index(name))
        courses.append(idx)
    record = _Record(cfg.log_every, names)

    pixel_range = None
    if cfg.pixel_mean:
        if len(cfg.pixel_mean) not in (1, img_shape[0]):
            raise ConfigError(f"lis: pixel_mean has {len(cfg.pixel_mean)} values for {img_shape[0]} input channels")
        pixel_range = ([(0 - m) / s for m, s in zip(cfg.pixel_mean, cfg.pixel_std, strict=True)],
                       [(1 - m) / s for m, s in zip(cfg.pixel_mean, cfg.pixel_std, strict=True)])
    common = dict(img_shape=img_shape, pixel_range=pixel_range, steps=cfg.inversion_steps, num_classes=num_classes,
                  lr=cfg.inversion_lr,
                  bns_weight=cfg.bns_weight, tv_weight=cfg.tv_weight, progress=progress, on_iter=record,
                  checkpoint=checkpoint, aux=record)
    first = min(cfg.inversion_batch, cfg.num_images)
    with timer("inversion"):
        imgs0, y0 = invert_images(teacher, first, batch_size=first, seed=cfg.seed,
                                  desc="LIS inversion (float course)", stage="inversion_float", **common)
    for m in models:
        if m is not teacher:  # data-free PTQ of the quantized teachers on the float teacher's first batch
            calibrate(m, [imgs0])
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
    images, labels = [imgs0], [y0]
    if cfg.num_images > first:
        with timer("inversion"):
            rest, y_rest = invert_images(teacher, cfg.num_images - first, teachers=models,
                                         pick=course_picker(courses), batch_size=cfg.inversion_batch,
                                         seed=cfg.seed + 1, desc="LIS inversion (hierarchical courses)",
                                         stage="inversion_courses", **common)
        images.append(rest)
        labels.append(y_rest)
    return torch.cat(images), torch.cat(labels), record.history


def train_lis(teacher: torch.nn.Module, student: torch.nn.Module, cfg: LISConfig, img_shape: tuple[int, int, int],
              num_classes: int, progress: bool = True, on_step: Callable[[int, torch.nn.Module], None] | None = None,
              run_dir: str | Path | None = None, warmup_cache: dict | None = None,
              checkpoint: Checkpointer | None = None, timer: Timer | None = None) -> list[dict]:
    """Synthesise (or load) the LIS set, then PTQ-calibrate and KD-train ``student`` on it. Returns the history."""
    fingerprint = _teacher_fingerprint(teacher)
    reuse = bool(cfg.synthetic_set) and Path(cfg.synthetic_set).exists()
    if reuse:
        images, labels, meta = load_synthetic_set(cfg.synthetic_set, img_shape)
        log.info("LIS: reusing %d synthetic images from %s (made from teacher %s)", len(images), cfg.synthetic_set,
                 meta.get("teacher_fingerprint", "?"))
        history: list[dict] = []
    else:
        images, labels, history = synthesize_lis_set(teacher, cfg, img_shape, num_classes, progress, checkpoint,
                                                     timer)
        target = Path(cfg.synthetic_set) if cfg.synthetic_set else (Path(run_dir) / "synthetic_set.safetensors"
                                                                     if run_dir else None)
        if target is not None:
            meta = {"dfq_deploy_version": __version__, "recipe": "lis", "teacher_fingerprint": fingerprint,
                    "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}}
            save_synthetic_set(target, images, labels, meta)
            log.info("LIS: wrote %d synthetic images to %s", len(images), target)
    kd_cfg = SetKDConfig(**{k: getattr(cfg, k) for k in SetKDConfig.__dataclass_fields__})
    return history + kd_on_images(teacher, student, images, kd_cfg, progress, on_step, name="LIS QAT",
                                  checkpoint=checkpoint)
