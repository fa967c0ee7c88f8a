"""Block reconstruction of a quantized student on synthetic images (the BRECQ / QDrop / Genie line).

The student is cut into blocks at the points of its graph where one activation alone carries everything forward (a
ResNet's basic blocks, the stem, the classifier). Block by block, in order, on cached inputs:

- the weights' rounding is learned (AdaRound: each weight rounds down or up, decided by a learnable logit pushed to
  0 or 1 by an annealed regulariser), using Brevitas' own ``LearnedRoundSte`` / ``LearnedRoundHardSigmoid`` in the
  weight quantizer;
- the activation step sizes of the block's quantizers are learned (LSQ-style: Brevitas' scale parameters);
- QDrop: during reconstruction each activation of the block (and the block's input) keeps its unquantized value with
  probability ``qdrop``, so the block learns a solution that is flat against the quantization noise of its input;
- the loss is the squared error between the quantized block's output and the **float** network's output of that
  block (the float network = the same graph with quantization off, i.e. the BN-merged teacher).

The block's input is the quantized network's own output of the previous, already reconstructed block.

Afterwards the learned rounding is baked into the float weights (each weight moved the least distance that makes
round-to-nearest give its learned code), and Brevitas' round-to-nearest quantizer is put back. The student keeps
its structure and state-dict keys, so it exports to the same integer QDQ graph and reloads from
``student.safetensors`` as before.

Why this is written here rather than taken from Brevitas: Brevitas ships the rounding modules used below, but its
block-wise trainer lives in ``brevitas_examples`` (not a library API; it needs ``accelerate``) and finds blocks as
sub-modules with their own ``forward``. Our student is a flat ``torch.fx.GraphModule`` produced by Brevitas'
``quantize`` pass, whose blocks exist only as regions of the graph, so blocks are cut from the graph here.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from tqdm.auto import tqdm

from ..checkpoint import NO_CHECKPOINT, Checkpointer, cpu_state
from ..data.augment import augment
from ..distributed import average_gradients, rank_seed
from ..errors import ConfigError
from .fastpath import (FusedActivationQuant, LeanBlock, cache_learned_rounding, is_act_quant, keep_lerp, keep_mask,
                       uncache)
from .grid import scale_setter

log = logging.getLogger("dfq_deploy")


@dataclass(frozen=True)
class ReconstructionConfig:
    iters: int = 200              # optimisation steps per block (0 = no reconstruction)
    batch_size: int = 32          # images per step
    qdrop: float = 0.5            # probability that an activation keeps its unquantized value during reconstruction
    round_lr: float = 1e-2        # Adam learning rate of the rounding logits
    scale_lr: float = 1e-2        # Adam learning rate of the activation step sizes, relative to their size
    round_weight: float = 0.01    # weight of the rounding regulariser (pushes each weight to round down or up)
    warmup: float = 0.2           # share of each block's steps before the rounding regulariser starts
    augment: int = 0              # augmented copies of the images added to the set (random 2-pixel shift + flip)
    augment_pad: int = 2          # the shift's range in pixels
    seed: int = 0

    def __post_init__(self):
        if self.iters < 0 or self.batch_size < 1:
            raise ConfigError("reconstruction: iters must be >= 0 and batch_size >= 1")
        if not 0 <= self.augment <= 16 or self.augment_pad < 0:
            raise ConfigError("reconstruction: augment must be in [0, 16] copies and augment_pad >= 0")
        if not 0.0 <= self.qdrop <= 1.0 or not 0.0 <= self.warmup < 1.0:
            raise ConfigError("reconstruction: qdrop must be in [0, 1] and warmup in [0, 1)")
        if self.round_lr <= 0 or self.scale_lr < 0 or self.round_weight < 0:
            raise ConfigError("reconstruction: round_lr must be positive, scale_lr and round_weight >= 0")


@dataclass
class Block:
    """A region of the student's graph: ``nodes`` in order, fed only by ``input`` and ending at ``output``."""

    input: fx.Node
    nodes: list[fx.Node]
    output: fx.Node
    compute: list[str] = field(default_factory=list)      # names of the quantized Conv/Linear modules
    activations: list[str] = field(default_factory=list)  # names of the activation quantizer modules

    @property
    def name(self) -> str:
        return self.compute[0] if self.compute else self.output.name


def _is_compute(mod: nn.Module) -> bool:
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    return isinstance(mod, QuantWeightBiasInputOutputLayer)


def find_blocks(gm: fx.GraphModule) -> list[Block]:
    """Cut ``gm`` into blocks: a block ends at an activation quantizer that is a *cut point* of the graph (nothing
    computed before it is used after it) once the block holds at least one Conv/Linear."""
    nodes = list(gm.graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConfigError("reconstruction needs a model with exactly one input")
    blocks: list[Block] = []
    reach = -1   # furthest position that a node before the current one is used at
    start = placeholders[0]
    current: list[fx.Node] = []
    for n in nodes:
        if n.op in ("placeholder", "output"):
            reach = max(reach, max((pos[u] for u in n.users), default=-1))
            continue
        current.append(n)
        mod = gm.get_submodule(n.target) if n.op == "call_module" else None
        cut = reach <= pos[n]
        has_compute = any(m.op == "call_module" and _is_compute(gm.get_submodule(m.target)) for m in current)
        if cut and has_compute and mod is not None and is_act_quant(mod):
            blocks.append(Block(start, current, n))
            start, current = n, []
        reach = max(reach, max((pos[u] for u in n.users), default=-1))
    if current:  # nodes after the last cut: a block of their own if they compute, else part of the last block
        tail = current[-1]
        if any(m.op == "call_module" and _is_compute(gm.get_submodule(m.target)) for m in current) or not blocks:
            blocks.append(Block(start, current, tail))
        else:
            blocks[-1].nodes += current
            blocks[-1].output = tail
    for b in blocks:
        for n in b.nodes:
            if n.op != "call_module":
                continue
            mod = gm.get_submodule(n.target)
            if _is_compute(mod) and n.target not in b.compute:
                b.compute.append(n.target)
            elif is_act_quant(mod) and n.target not in b.activations:
                b.activations.append(n.target)
    return blocks


def block_module(gm: fx.GraphModule, block: Block) -> fx.GraphModule:
    """A GraphModule computing ``block`` from its input; it shares ``gm``'s modules (training it trains ``gm``)."""
    # Brevitas' quantize pass returns a graph of its own fx backport: build the block with the same classes
    g = type(gm.graph)()
    env = {block.input: g.placeholder("block_input")}
    for n in block.nodes:
        env[n] = g.node_copy(n, lambda a: env[a])
    g.output(env[block.output])
    return type(gm).__mro__[1](gm, g)


def _value(x):
    return getattr(x, "value", x)


class _LearnedRounding:
    """AdaRound on one Brevitas Conv/Linear: swaps its weight quantizer's round-to-nearest for Brevitas'
    ``LearnedRoundSte`` (floor + a learnable 0..1 offset per weight), then bakes the result into the float weight."""

    ZETA, GAMMA = 1.1, -0.1

    def __init__(self, layer: nn.Module):
        from brevitas.core.function_wrapper.learned_round import LearnedRoundHardSigmoid, LearnedRoundSte

        self.layer = layer
        self.int_quant = layer.weight_quant.tensor_quant.int_quant
        self.original = self.int_quant.float_to_int_impl
        with torch.no_grad():
            scale = layer.quant_weight().scale
            rest = layer.weight / scale - torch.floor(layer.weight / scale)
            # AdaRound's initialisation: the hard sigmoid starts at each weight's fractional part (nearest rounding)
            init = -torch.log((self.ZETA - self.GAMMA) / (rest - self.GAMMA) - 1)
        self.impl = LearnedRoundSte(LearnedRoundHardSigmoid(self.ZETA, self.GAMMA), init, nn.Identity())
        self.int_quant.float_to_int_impl = self.impl
        self.tensor_quant = layer.weight_quant.tensor_quant
        self.frozen = [(p, p.requires_grad) for p in (layer.weight, getattr(layer, "bias", None)) if p is not None]
        if cache_learned_rounding(self.tensor_quant, self.impl, layer.weight):
            # Only the rounding learns: the float weight, hence its step size, stays as it is until bake(); the
            # float weight and bias get no gradient (nothing uses it).
            for p, _ in self.frozen:
                p.requires_grad_(False)

    def restore(self) -> None:
        """Brevitas' own weight quantizer path and the float parameters' gradients back (before baking)."""
        uncache(self.tensor_quant)
        for p, flag in self.frozen:
            p.requires_grad_(flag)

    @property
    def param(self) -> nn.Parameter:
        return self.impl.value

    def regulariser(self, beta: float) -> torch.Tensor:
        h = torch.clamp(torch.sigmoid(self.impl.value) * (self.ZETA - self.GAMMA) + self.GAMMA, 0, 1)
        return (1 - (2 * h - 1).abs().pow(beta)).sum()

    def bake(self, margin: float = 0.1) -> int:
        """Write the learned rounding into the float weight and restore round-to-nearest. Returns how many weights
        round differently from nearest rounding.

        Each weight moves as little as possible: to the nearest point at least ``margin`` steps inside the
        rounding bin of its learned code (a weight whose code did not change stays where it was). Setting every
        weight exactly *on* its grid point would also be exact, but it parks all weights half a step from any
        rounding boundary, and later KD steps (small SGD updates through the straight-through estimator) then
        cannot change many codes: the KD recipes that follow reconstruction measured better with this bake
        (docs/benchmarks.md)."""
        self.restore()
        layer = self.layer
        was_training = layer.training
        layer.eval()
        with torch.no_grad():
            qw = layer.quant_weight()
            scale = qw.scale
            codes = torch.round(qw.value / scale)
            ratio = layer.weight / scale
            nearest = torch.round(ratio)
            # the weight scale comes from the channel's extremes (:mod:`.grid`): the weight that sets it keeps its
            # value (and so its code, an end of the grid), and no other weight may reach past the grid's ends
            # relative to it, or the scale would change
            flat_codes, flat_ratio = codes.flatten(1), ratio.flatten(1)
            bits = qw.bit_width
            low, high = float(self.int_quant.min_int(bits)), float(self.int_quant.max_int(bits))
            top = scale_setter(flat_ratio, low, high)
            rows = torch.arange(flat_codes.shape[0], device=flat_codes.device)
            flat_codes[rows, top] = torch.round(flat_ratio[rows, top])
            setter = flat_ratio[rows, top].unsqueeze(1)
            # the other end in proportion (on a narrow grid exactly the setter's magnitude, negated)
            upper = torch.where(setter >= 0, setter, setter * (high / low))
            lower = torch.where(setter >= 0, setter * (low / high), setter)
            moved = torch.minimum(torch.maximum(flat_ratio, flat_codes - 0.5 + margin), flat_codes + 0.5 - margin)
            moved = torch.maximum(torch.minimum(moved, upper), lower)
            moved[rows, top] = flat_ratio[rows, top]
            codes = flat_codes.view_as(codes)
            changed = int((codes != nearest).sum())
            self.int_quant.float_to_int_impl = self.original
            layer.weight.copy_(moved.view_as(ratio) * scale)
            check = layer.quant_weight()
            assert torch.equal(torch.round(check.value / check.scale), codes), "baked weights left their codes"
            assert torch.allclose(check.scale, scale, rtol=1e-6, atol=0), "baked weights changed the weight scale"
        layer.train(was_training)
        return changed


def _scale_params(gm: fx.GraphModule, names: list[str], frozen: set[int]) -> list[nn.Parameter]:
    """The learnable step sizes of the quantizers ``names``, except those in ``frozen`` (ids of parameters learned
    in earlier blocks: Brevitas shares one step size between a residual add's inputs, so a block's add can use
    the step size of the previous block's output, which must stay as that block left it)."""
    params = []
    for name in names:
        impl = gm.get_submodule(name).act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl
        p = getattr(impl, "value", None)
        if isinstance(p, nn.Parameter) and p.requires_grad and id(p) not in frozen and \
                all(p is not q for q in params):
            params.append(p)
    return params


class _QDrop:
    """Forward hooks that give each activation quantizer's output its unquantized value with probability ``p``."""

    def __init__(self, gm: fx.GraphModule, names: list[str], p: float, rng: torch.Generator):
        self.p, self.rng = p, rng
        self.handles = [gm.get_submodule(n).register_forward_hook(self._hook) for n in names] if p > 0 else []

    def _hook(self, module, inputs, output):
        if not module.training or not hasattr(output, "value"):
            return None
        fp = module.act_quant.fused_activation_quant_proxy.activation_impl(_value(inputs[0]))
        return output.set(value=keep_lerp(output.value, fp, keep_mask(fp.shape, self.p, self.rng)))

    def remove(self):
        for h in self.handles:
            h.remove()


class _PreQuant:
    """Forward hook keeping an activation quantizer's unquantized output (QDrop's alternative input)."""

    def __init__(self, module: nn.Module):
        self.module, self.value = module, None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.value = module.act_quant.fused_activation_quant_proxy.activation_impl(_value(inputs[0])).detach()


# the smallest an activation step size may become in reconstruction, as a fraction of its calibrated value. Left
# free, a block can learn to switch a branch off by shrinking its step size towards nothing (seen at 2 bits): the
# quantizer then saturates at a value of almost zero, which the trained model computes in float but an integer
# runtime, whose requantization multiplies by the inverse of that step, does not reproduce near zero
MIN_STEP_FRACTION = 0.01

PROBE_IMAGES = 256  # about this many images measure each block's error before and after its reconstruction


def _error(out: torch.Tensor, target: torch.Tensor) -> float:
    """The reconstruction error: squared distance per image, averaged over images."""
    return float((out - target).pow(2).flatten(1).sum(1).mean())


def _run(sub: fx.GraphModule, inputs, template, chunk: int = 256, pre: _PreQuant | None = None):
    """(output values, output QuantTensor template or None, unquantized outputs or None) of ``sub`` over ``inputs``."""
    values = pres = out_template = None
    n = len(inputs)
    with torch.no_grad():
        for i in range(0, n, chunk):
            x = inputs[i:i + chunk]
            out = sub(template.set(value=x) if template is not None else x)
            v = _value(out)
            if values is None:  # written chunk by chunk into one tensor, not concatenated at the end
                values = v.new_empty((n,) + v.shape[1:])
                pres = pre.value.new_empty((n,) + pre.value.shape[1:]) if pre is not None else None
            values[i:i + len(x)] = v
            if hasattr(out, "scale") and out_template is None:
                out_template = out.set(value=out.value[:1].detach())
            if pre is not None:
                pres[i:i + len(x)] = pre.value
    return values, out_template, pres


def _block_outputs(sub: fx.GraphModule, block: Block, q_in, template):
    """(quantized outputs, their QuantTensor template, unquantized outputs of the block's last quantizer or None)
    of the reconstructed block ``sub`` over ``q_in``: the next block's inputs."""
    sub.eval()
    pre = _PreQuant(sub.get_submodule(block.output.target)) if block.output.op == "call_module" and \
        is_act_quant(sub.get_submodule(block.output.target)) else None
    try:
        return _run(sub, q_in, template, pre=pre)
    finally:
        if pre is not None:
            pre.handle.remove()


def reconstruct(student: fx.GraphModule, images: torch.Tensor | list[torch.Tensor], cfg: ReconstructionConfig,
                progress: bool = True, checkpoint: Checkpointer | None = None, stage: str = "reconstruction"
                ) -> list[dict]:
    """Block-wise reconstruction of ``student`` (calibrated already) on ``images``; see the module docstring.

    Returns one history entry per block (its reconstruction error before and after, and the weights whose rounding
    moved off nearest). The student is left in eval mode.

    ``checkpoint``: the student's state, the random stream and the history are saved as section ``stage`` after each
    block. A saved section is continued: the student takes the saved state, the finished blocks are only run
    forward (to compute the next block's inputs, exactly as before) and reconstruction goes on with the next block.
    """
    if cfg.iters == 0:
        return []
    # every quantized pass below, training or not, takes the fused activation fake-quant: the same values, and the
    # passes over all images before and after each block's training (its inputs, its error) are a sizeable share of
    # the stage on Brevitas' own path (docs/benchmarks.md)
    with FusedActivationQuant(student):
        return _reconstruct(student, images, cfg, progress, checkpoint, stage)


@dataclass
class _Chain:
    """What the next block starts from: the quantized network's values (``q``) with their QuantTensor template
    (None for the network input), the unquantized values of the last quantizer (QDrop's alternative input, or None)
    and the float network's values (``fp``)."""

    q: torch.Tensor
    fp: torch.Tensor
    pre: torch.Tensor | None = None
    template: object = None


def _reconstruct(student, images, cfg: ReconstructionConfig, progress: bool, checkpoint, stage: str) -> list[dict]:
    """:func:`reconstruct`'s body, with the fused activation quantizers in place: block by block, resumed from
    ``checkpoint`` where a section ``stage`` was saved."""
    ck = checkpoint or NO_CHECKPOINT
    images = torch.cat(list(images)) if isinstance(images, (list, tuple)) else images
    blocks = find_blocks(student)
    rng = torch.Generator().manual_seed(rank_seed(cfg.seed))  # several processes: each its own batches and masks
    images = _reconstruction_set(images, cfg, rng)
    history: list[dict] = []
    t0 = time.time()
    chain = _Chain(q=images, fp=images)
    bar = tqdm(total=len(blocks) * cfg.iters, desc="block reconstruction", disable=not progress)
    learned: set[int] = set()  # ids of the step sizes learned so far
    done = 0
    saved = ck.resumed(stage)
    if saved is not None:
        from .scheme import load_quantized_state

        done, history = saved["step"], list(saved["history"])
        if done == len(blocks):  # finished before the interruption
            load_quantized_state(student, saved["student"])
            bar.close()
            student.eval()
            return history
        chain = _replay(student, blocks[:done], saved["student"], chain, learned)
        rng.set_state(saved["rng"])
        bar.update(done * cfg.iters)
    for k, block in enumerate(blocks[done:], start=done):
        entry, chain = _reconstruct_block(student, block, k, chain, learned, cfg, rng, bar,
                                          stopped=lambda: ck.raise_if_stopped(stage, k))
        history.append(entry)
        ck.unit_done(stage, k + 1, lambda: {"step": k + 1, "history": list(history), "rng": rng.get_state(),
                                            "student": cpu_state(student)})
    bar.close()
    student.eval()
    log.info("block reconstruction: %d blocks, %d steps each (%.0f s)", len(blocks), cfg.iters, time.time() - t0)
    return history


def _reconstruction_set(images: torch.Tensor, cfg: ReconstructionConfig, rng: torch.Generator) -> torch.Tensor:
    """``images`` and, with ``cfg.augment``, that many augmented copies of them."""
    if cfg.augment:
        # more distinct inputs at no synthesis cost: the blocks see shifted / mirrored copies as well (the usual
        # training augmentations of vision CNNs, so the copies stay in the teacher's input distribution)
        images = torch.cat([images] + [augment(images, cfg.augment_pad, True, rng) for _ in range(cfg.augment)])
    return images


def _float_outputs(sub: fx.GraphModule, x: torch.Tensor) -> torch.Tensor:
    """The float network's outputs of the block ``sub`` (every quantizer off) over ``x``."""
    from brevitas.graph.calibrate import quantization_status_manager

    with quantization_status_manager(sub, disable_act_quant=True, disable_weight_quant=True,
                                     disable_bias_quant=True, is_training=False):
        return _run(sub, x, None)[0]


def _replay(student, finished: list[Block], state: dict, chain: _Chain, learned: set[int]) -> _Chain:
    """The chain after the ``finished`` blocks of a resumed run, exactly as it was: the float reference first, with
    the float weights as calibrated (baking moved the finished blocks' float weights), then the quantized chain with
    the saved ``state`` loaded into ``student``."""
    from .scheme import load_quantized_state

    fp = chain.fp
    for block in finished:
        fp = _float_outputs(block_module(student, block).eval(), fp)
    load_quantized_state(student, state)
    q, template, pre = chain.q, chain.template, chain.pre
    for block in finished:
        sub = block_module(student, block).eval()
        learned.update(id(p) for p in _scale_params(sub, block.activations, learned))
        q, template, pre = _block_outputs(sub, block, q, template)
    return _Chain(q=q, fp=fp, pre=pre, template=template)


def _reconstruct_block(student, block: Block, k: int, chain: _Chain, learned: set[int], cfg: ReconstructionConfig,
                       rng: torch.Generator, bar, stopped) -> tuple[dict, _Chain]:
    """Reconstruct ``block`` (the ``k``-th) from ``chain``: (its history entry, the chain for the next block)."""
    sub = block_module(student, block)
    sub.eval()
    fp_out = _float_outputs(sub, chain.fp)
    n = len(chain.q)
    # the block's error before and after is reported on every stride-th image (PROBE_IMAGES of them): a pass over
    # all images only for the report would cost as much as a pass that computes the next block's inputs
    probe = slice(None, None, max(1, n // PROBE_IMAGES))
    err_before = _error(_run(sub, chain.q[probe], chain.template)[0], fp_out[probe])
    rounding = [_LearnedRounding(sub.get_submodule(name)) for name in block.compute]
    scales = _scale_params(sub, block.activations, learned)
    learned.update(id(p) for p in scales)
    changed = _train_block(sub, block, chain, fp_out, rounding, scales, cfg, rng, bar, stopped)
    q_out, template_out, pre_out = _block_outputs(sub, block, chain.q, chain.template)
    err_after = _error(q_out[probe], fp_out[probe])
    probed = len(fp_out[probe])
    entry = {"phase": "reconstruction", "step": k, "block": block.name, "rec_before": err_before,
             "rec_after": err_after, "rounding_changed": changed, "images": n, "probe_images": probed}
    log.info("reconstruction block %d (%s): error %.4g -> %.4g (%d images), %d weights rounded off nearest",
             k, block.name, err_before, err_after, probed, changed)
    return entry, _Chain(q=q_out, fp=fp_out, pre=pre_out, template=template_out)


def _optimizer(rounding: list[_LearnedRounding], scales: list[nn.Parameter], cfg: ReconstructionConfig):
    """Adam over the rounding logits and (if they learn) the step sizes, at a rate relative to their size."""
    groups = [{"params": [r.param for r in rounding], "lr": cfg.round_lr}]
    if scales and cfg.scale_lr > 0:
        # relative to the step sizes' magnitude: Adam moves a parameter by about lr per step
        size = float(torch.stack([p.detach().abs() for p in scales]).mean())
        groups.append({"params": scales, "lr": cfg.scale_lr * size})
    return torch.optim.Adam(groups, foreach=True)


def _train_block(sub: fx.GraphModule, block: Block, chain: _Chain, fp_out: torch.Tensor,
                 rounding: list[_LearnedRounding], scales: list[nn.Parameter], cfg: ReconstructionConfig,
                 rng: torch.Generator, bar, stopped) -> int:
    """``cfg.iters`` steps of the block's rounding and step sizes towards ``fp_out``; bakes the rounding in (also
    when stopped) and returns how many weights round off nearest. ``stopped()`` raises when the run must stop."""
    opt = _optimizer(rounding, scales, cfg)
    inner = [a for a in block.activations if a != block.output.target]
    drop = _QDrop(sub, inner, cfg.qdrop, rng)
    sub.train()
    # the block's training forward on plain tensors where it can (the same values and gradients as Brevitas' path,
    # without its QuantTensor bookkeeping); QDrop is then applied by the lean forward itself, in the hooks' order
    lean = LeanBlock.build(sub, chain.template is not None, set(inner), cfg.qdrop, rng)
    template = chain.template
    in_scale = template.scale if template is not None else None
    warm = int(cfg.warmup * cfg.iters)
    floors = [p.detach() * MIN_STEP_FRACTION for p in scales]
    try:
        for it in range(cfg.iters):
            x, idx = _batch(chain, cfg, rng)
            if lean is not None:
                out = lean(x, in_scale)
            else:
                out = _value(sub(template.set(value=x) if template is not None else x))
            rec = (out - fp_out.index_select(0, idx)).pow(2).flatten(1).sum(1).mean()
            loss = rec + _rounding_penalty(rounding, cfg, it, warm) if it >= warm else rec
            opt.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients([r.param for r in rounding] + scales)
            opt.step()
            with torch.no_grad():
                for p, floor in zip(scales, floors):
                    p.copy_(torch.maximum(p, floor))
            bar.update()
            stopped()  # the last finished block is saved already
    finally:
        drop.remove()
        changed = sum(r.bake() for r in rounding)
    return changed


def _batch(chain: _Chain, cfg: ReconstructionConfig, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(a random batch of the block's inputs, with QDrop's unquantized input mixed in; its image indices)."""
    q_in, pre_in = chain.q, chain.pre
    n = len(q_in)
    idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=rng).to(q_in.device)
    # index_select, not q_in[idx]: the same rows, without advanced indexing's slower general path
    x = q_in.index_select(0, idx)
    if pre_in is not None and cfg.qdrop > 0:
        x = keep_lerp(x, pre_in.index_select(0, idx), keep_mask(x.shape, cfg.qdrop, rng))
    return x, idx


def _rounding_penalty(rounding: list[_LearnedRounding], cfg: ReconstructionConfig, it: int, warm: int):
    """The rounding regulariser at step ``it`` (after ``warm`` steps of warm-up), weighted."""
    # AdaRound's annealing: the regulariser's exponent falls from 20 to 2
    progress_frac = (it - warm) / max(1, cfg.iters - warm)
    beta = 2 + 18 * (1 + math.cos(math.pi * progress_frac)) / 2
    return cfg.round_weight * sum(r.regulariser(beta) for r in rounding)
