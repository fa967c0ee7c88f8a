"""DMKD: data-free low-bit quantization by dynamic multi-teacher knowledge distillation (seed paper 000).

A generator makes images from noise; the low-bit student learns from the float teacher **and** from higher-bit
quantized copies of it (default W8A8 and W6A6), and a tiny learnable float network (:class:`DMKDBalancer`) sets each
teacher's loss weight as training goes. Only the student is exported.

Choices the paper leaves open, made here:

- Higher-bit teachers are obtained data-free: Brevitas copies of the float teacher at each ``teacher_bits``, their
  activation scales calibrated on the same synthetic images as the student, then frozen (PTQ; no further
  training). ``teacher_recon_iters > 0`` also block-reconstructs them (the ablation's "briefly fine-tuned"
  teachers).
- The balancer's input per teacher is: the relative KD loss, top-1 agreement with the student, teacher confidence
  and training progress. It learns from a first-order look-ahead on the student's last layer, so it rewards
  teachers whose push generalises to fresh images rather than the easiest one to match, and every teacher keeps a
  floor weight (see :class:`DMKDBalancer`).
- Weights are logged as ``w_<teacher>`` in the history; the run's ``losses.png`` plots them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from ..checkpoint import Checkpointer, cpu_state
from ..device import module_device
from ..distributed import average_gradients
from ..distill import DMKDBalancer, FixedBalancer, kd_loss, teacher_features
from ..config import Count, Names, Number, Rate, config_class
from ..quant import QuantScheme, calibrate, quantize_model, reconstruct
from .loop import KDLoopConfig, StudentObjective, Timer, run_kd_loop
from .options import ReconOptions


@config_class
class DMKDConfig(KDLoopConfig):
    # quantized copies of the float teacher used as extra teachers (at most 8)
    teacher_bits: Annotated[Names, Field(max_length=8)] = ("W8A8", "W6A6")
    balancer_hidden: Annotated[Count, Field(ge=1, le=4096)] = 16   # hidden units of the tiny weighting network
    balancer_lr: Rate = 1e-2        # Adam learning rate of the weighting network
    weight_floor: Annotated[Number, Field(ge=0, lt=1)] = 0.2   # every teacher keeps at least weight_floor / K
    entropy_weight: Number = 0.01   # entropy bonus on the weights (keeps them from saturating early)
    balancer: Literal["learned", "uniform"] = "learned"   # the tiny weighting network, or fixed equal weights
    teacher_recon_iters: Count = 0  # > 0: the quantized teachers are also block-reconstructed (steps per block)
    # the student is block-reconstructed after calibration, before KD: measured better (docs/benchmarks.md); the
    # other generator recipes keep it off (not measured with it)
    recon: ReconOptions = ReconOptions(iters=100)

    @field_validator("teacher_bits")
    @classmethod
    def _known_tags(cls, tags):
        for tag in tags:
            QuantScheme.from_tag(tag)  # raises ConfigError for a bad tag
        return tags


class _LastLayerInput:
    """Forward hook keeping the input features of the student's last compute layer."""

    def __init__(self, student: torch.nn.Module):
        import brevitas.nn as qnn

        layers = [m for m in student.modules() if isinstance(m, (qnn.QuantLinear, qnn.QuantConv2d))]
        assert layers, "the student has no quantized compute layer"
        self.linear = isinstance(layers[-1], qnn.QuantLinear)
        self.features: torch.Tensor | None = None
        self.handle = layers[-1].register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        x = inputs[0]
        x = getattr(x, "value", x)  # Brevitas QuantTensor -> float tensor
        self.features = x.detach().flatten(1) if self.linear else None


class _MultiTeacherKD(StudentObjective):
    def __init__(self, cfg: DMKDConfig):
        self.cfg = cfg
        self.names = ["fp", *[t.lower() for t in cfg.teacher_bits]]
        # the balancer's first layer is randomly initialised: seed it (torch's default generator starts from a
        # random seed in every process, and this object is built before the loop seeds it)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.balancer = DMKDBalancer(self.names, hidden=cfg.balancer_hidden, floor=cfg.weight_floor,
                                         entropy_weight=cfg.entropy_weight)
        self.opt = torch.optim.Adam(self.balancer.parameters(), lr=cfg.balancer_lr)
        self.teachers: list[torch.nn.Module] = []
        self.prev: tuple[torch.Tensor, torch.Tensor] | None = None  # (features, per-teacher last-layer grads)
        self.hook: _LastLayerInput | None = None

    def setup(self, teacher, student, calib_images):
        self.balancer.to(module_device(teacher))  # in place: the optimiser keeps the same parameters
        for tag in self.cfg.teacher_bits:
            q = quantize_model(teacher, QuantScheme.from_tag(tag))
            calibrate(q, calib_images)
            if self.cfg.teacher_recon_iters:
                with torch.enable_grad():
                    rc = replace(self.cfg.reconstruction(), iters=self.cfg.teacher_recon_iters)
                    reconstruct(q, calib_images, rc, progress=False)
            q.eval()
            for p in q.parameters():
                p.requires_grad_(False)
            self.teachers.append(q)
        self.hook = _LastLayerInput(student)

    def loss(self, imgs, t_logits, s_logits, step, total):
        with torch.no_grad():
            logits = [t_logits] + [t(imgs) for t in self.teachers]
        losses = [kd_loss(s_logits, t, self.cfg.tau) for t in logits]
        if self.cfg.balancer == "uniform":  # the ablation's fixed-weight baseline
            out = {f"w_{n}": 1 / len(losses) for n in self.names}
            out.update({f"kd_{n}": l_k.item() for n, l_k in zip(self.names, losses, strict=True)})
            out["kd"] = losses[0].item()
            fixed = FixedBalancer({n: 1.0 for n in self.names})
            return fixed(dict(zip(self.names, losses, strict=True))), out
        # per-teacher gradient on the last layer's weight: dL/dW = (dL/ds)^T h
        grads = [torch.autograd.grad(l_k, s_logits, retain_graph=True)[0] for l_k in losses]
        h = self.hook.features
        if h is None:
            h = torch.ones(s_logits.shape[0], 1, device=s_logits.device)
        g_last = torch.stack([(g.t() @ h).flatten() for g in grads])           # K x (C*F)
        with torch.no_grad():
            s_top = s_logits.argmax(1)
            agreement = torch.stack([(t.argmax(1) == s_top).float().mean() for t in logits])
            confidence = torch.stack([F.softmax(t, 1).max(1).values.mean() for t in logits])
        kd = torch.stack([l_k.detach() for l_k in losses])
        feats = teacher_features(kd, agreement, confidence, step / max(1, total))
        meta = {}
        if self.prev is not None:  # the float teacher's gradient on this fresh batch judges last step's teachers
            prev_feats, prev_g = self.prev
            align = F.cosine_similarity(prev_g, g_last[0:1].expand_as(prev_g), dim=1)
            m_loss = self.balancer.meta_loss(prev_feats, align)
            self.opt.zero_grad(set_to_none=True)
            m_loss.backward()
            average_gradients(self.balancer.parameters())
            self.opt.step()
            meta = {f"align_{n}": a.item() for n, a in zip(self.names, align, strict=True)}
        self.prev = (feats, g_last.detach())
        loss = self.balancer({n: l_k for n, l_k in zip(self.names, losses, strict=True)}, feats)
        with torch.no_grad():
            w = self.balancer.weights(feats)
        out = {f"w_{n}": w[i].item() for i, n in enumerate(self.names)}
        out.update({f"kd_{n}": kd[i].item() for i, n in enumerate(self.names)})
        out["kd"] = kd[0].item()
        out.update(meta)
        return loss, out

    def state_dict(self):
        prev = None if self.prev is None else [t.detach().cpu().clone() for t in self.prev]
        return {"balancer": cpu_state(self.balancer), "opt": cpu_state(self.opt), "prev": prev}

    def load_state_dict(self, state):
        dev = module_device(self.balancer)
        self.balancer.load_state_dict(state["balancer"])
        self.opt.load_state_dict(state["opt"])
        self.prev = None if state["prev"] is None else tuple(t.to(dev) for t in state["prev"])

    def close(self):
        if self.hook is not None:
            self.hook.handle.remove()
        self.teachers = []


def train_dmkd(teacher: torch.nn.Module, student: torch.nn.Module, cfg: DMKDConfig, img_shape: tuple[int, int, int],
               num_classes: int, progress: bool = True,
               on_step: Callable[[int, torch.nn.Module], None] | None = None, run_dir=None,
               warmup_cache: dict | None = None, checkpoint: Checkpointer | None = None,
               timer: Timer | None = None) -> list[dict]:
    """Train ``student`` in place with DMKD (see module docstring). Returns the history, with teacher weights."""
    return run_kd_loop(teacher, student, cfg, _MultiTeacherKD(cfg), img_shape, num_classes, progress, on_step,
                       name="DMKD", warmup_cache=warmup_cache, checkpoint=checkpoint, timer=timer)
