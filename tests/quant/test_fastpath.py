"""The fast path's contract (``dfq_deploy/quant/fastpath``): each part gives Brevitas' own values and gradients, bit
for bit, and with a Brevitas version outside the checked ones every part declines and Brevitas' path is taken.

Run this file under a new Brevitas version before adding it to ``fastpath.guard.CHECKED_BREVITAS``."""

import logging

import pytest
import torch

from dfq_deploy.quant import QuantScheme, calibrate, quantize_model, reconstruct
from dfq_deploy.quant import fastpath
from dfq_deploy.quant.fastpath import FusedActivationQuant, LeanBlock, guard, is_act_quant, keep_lerp, keep_mask
from dfq_deploy.quant.reconstruct import (ReconstructionConfig, _LearnedRounding, _QDrop, _scale_params, _value,
                                          block_module, find_blocks)


def _images(n=64, seed=1):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)).clamp(-0.8, 2.0)


def _student(teacher, bits="W3A3", calibration_images=64):
    s = quantize_model(teacher, QuantScheme.from_tag(bits))
    calibrate(s, [_images(calibration_images)])
    return s.eval()


# --- the fused activation fake-quantization (fastpath.activation) ---

def _act_quantizers(student):
    return [n for n, m in student.named_modules() if is_act_quant(m)]


@pytest.mark.parametrize("bits", ["W4A4", "W3A3", "W8A8"])
def test_fused_activation_quantizer_computes_brevitas_values_and_gradients(tiny_teacher, bits):
    """Reconstruction's fused fake-quantization: the same values, bit for bit, as Brevitas' own path, and
    the same gradients for the input and the learned step size; removed without a trace."""

    s = _student(tiny_teacher, bits, calibration_images=96)
    s.train()
    names = _act_quantizers(s)
    x = torch.randn(4, 16, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    for name in names:
        mod = s.get_submodule(name)
        if name.startswith("x_quant"):  # the image quantizer: 1 channel
            inp = x[:, :1]
        else:
            inp = x
        scale = mod.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.value
        results = []
        for fused in (False, True):
            patch = FusedActivationQuant(s, [name]) if fused else None
            xi = inp.clone().requires_grad_(True)
            out = _value(mod(xi))
            weights = torch.linspace(-1, 1, out.numel()).view_as(out)
            scale.grad = None
            (out * weights).sum().backward()
            results.append((out.detach(), xi.grad.clone(), scale.grad.clone()))
            if patch is not None:
                assert len(patch.patched) == 1
                patch.remove()
        (o1, gx1, gs1), (o2, gx2, gs2) = results
        assert torch.equal(o1, o2), name
        assert torch.allclose(gx1, gx2, rtol=1e-5, atol=1e-6), name
        assert torch.allclose(gs1, gs2, rtol=1e-4, atol=1e-5), (name, gs1, gs2)
        assert gs1.abs().sum() > 0  # a real gradient was compared
        tq = mod.act_quant.fused_activation_quant_proxy.tensor_quant
        assert "forward" not in vars(tq)



# --- the cached learned rounding of a weight quantizer (fastpath.rounding) ---

def test_learned_rounding_with_a_cached_step_size_is_brevitas_own(tiny_teacher):
    """The weight quantizer's cached step size gives exactly Brevitas' quantized weight with the learned
    rounding; the float weight is frozen meanwhile and given back its gradient after baking."""
    s = _student(tiny_teacher, calibration_images=96)
    layer = s.get_submodule("layer1.0.conv1")
    r = _LearnedRounding(layer)
    with torch.no_grad():
        r.param.add_(torch.randn(r.param.shape, generator=torch.Generator().manual_seed(0)))
    assert "forward" in vars(layer.weight_quant.tensor_quant) and not layer.weight.requires_grad
    upstream = torch.randn(layer.weight.shape, generator=torch.Generator().manual_seed(1))
    results = []
    for _ in range(2):  # the cached path, then Brevitas' own path with the same learned rounding
        for training in (True, False):  # soft offsets while learning, hard 0 / 1 ones in eval
            layer.train(training)
            r.param.grad = None
            value = layer.quant_weight().value
            if training:
                (value * upstream).sum().backward()
            results.append((value.detach().clone(), None if r.param.grad is None else r.param.grad.clone()))
        if "forward" in vars(layer.weight_quant.tensor_quant):
            del layer.weight_quant.tensor_quant.forward
    for (cached, cached_grad), (own, own_grad) in zip(results[:2], results[2:]):
        assert torch.equal(cached, own)
        assert (cached_grad is None) == (own_grad is None)
        if own_grad is not None:
            assert torch.equal(cached_grad, own_grad) and own_grad.abs().sum() > 0
    assert not torch.equal(results[0][0], results[1][0])  # soft and hard rounding differ: both were compared
    r.bake()
    assert layer.weight.requires_grad and "forward" not in vars(layer.weight_quant.tensor_quant)


# --- the lean training forward of a reconstruction block (fastpath.block) ---

def _block_inputs(student, blocks, k, x):
    """(values, QuantTensor or None) entering block ``k``: the quantized network's outputs before it."""
    with torch.no_grad():
        out = x
        for block in blocks[:k]:
            out = block_module(student, block).eval()(out)
    return (_value(out), out if hasattr(out, "scale") else None)


@pytest.mark.parametrize("bits,device", [("W4A4", "cpu"), ("W3A3", "cpu"), ("W8A8", "cpu"),
                                         pytest.param("W4A4", "cuda", marks=pytest.mark.gpu)])
def test_lean_block_gives_brevitas_values_and_gradients(tiny_teacher, bits, device):
    """Every block of the tiny ResNet, training with learned rounding, learned step sizes and QDrop: the lean
    forward's output and the gradients of the rounding logits and the step sizes equal Brevitas' path's, bit for bit,
    with the same QDrop masks (on CUDA, where convolution kernels may be chosen per call, to float rounding)."""
    s = _student(tiny_teacher, bits).to(device)
    blocks = find_blocks(s)
    x = _images(8, seed=5).to(device)
    compared = 0
    with FusedActivationQuant(s):
        for k, block in enumerate(blocks):
            values, qt = _block_inputs(s, blocks, k, x)
            sub = block_module(s, block)
            rounding = [_LearnedRounding(sub.get_submodule(n)) for n in block.compute]
            with torch.no_grad():  # rounding off nearest: soft offsets that differ from the initial ones
                for r in rounding:
                    r.param.add_(torch.randn(r.param.shape, generator=torch.Generator().manual_seed(k)).to(device))
            params = [r.param for r in rounding] + _scale_params(sub, block.activations, set())
            inner = {a for a in block.activations if a != block.output.target}
            sub.train()
            results = []
            for lean in (False, True):
                rng = torch.Generator().manual_seed(7)
                drop = _QDrop(sub, sorted(inner, key=block.activations.index), 0.5, rng) if not lean else None
                for p in params:
                    p.grad = None
                if lean:
                    fwd = LeanBlock.build(sub, qt is not None, inner, 0.5, rng)
                    assert fwd is not None, block.name
                    out = fwd(values, qt.scale if qt is not None else None)
                else:
                    out = _value(sub(qt.set(value=values) if qt is not None else values))
                    drop.remove()
                weights = torch.linspace(-1, 1, out.numel()).view_as(out).to(device)
                (out * weights).sum().backward()
                results.append((out.detach(), [p.grad.clone() for p in params]))
            for r in rounding:
                r.bake()
            (o1, g1), (o2, g2) = results
            same = torch.equal if device == "cpu" else (lambda a, b: torch.allclose(a, b, rtol=1e-4, atol=1e-6))
            assert same(o1, o2), block.name
            for a, b in zip(g1, g2):
                assert same(a, b), block.name
            assert all(g.abs().sum() > 0 for g in g1)  # real gradients were compared
            compared += 1
    assert compared == len(blocks) >= 4


def test_lean_block_declines_a_layer_without_cached_rounding(tiny_teacher):
    """A Conv whose weight quantizer is Brevitas' own (no learned rounding with a cached step size) is not the plain
    case: build returns None and reconstruction keeps Brevitas' path."""
    s = _student(tiny_teacher, "W4A4")
    block = find_blocks(s)[1]
    sub = block_module(s, block)
    with FusedActivationQuant(s):
        assert LeanBlock.build(sub, True, set(), 0.5, torch.Generator()) is None
        rounding = [_LearnedRounding(sub.get_submodule(n)) for n in block.compute]
        assert LeanBlock.build(sub, True, set(), 0.5, torch.Generator()) is not None
        for r in rounding:
            r.bake()


def test_reconstruction_with_the_lean_forward_is_brevitas_reconstruction(tiny_teacher, monkeypatch):
    """The whole stage, bit for bit: the student reconstructed through the lean forward equals the one reconstructed
    through Brevitas' modules (every block on Brevitas' path when build declines)."""
    cfg = ReconstructionConfig(iters=12, batch_size=16, seed=2)
    lean, own = _student(tiny_teacher, "W3A3"), _student(tiny_teacher, "W3A3")
    built = []
    original = LeanBlock.build.__func__

    def counting(cls, *a, **k):
        out = original(cls, *a, **k)
        built.append(out is not None)
        return out
    monkeypatch.setattr(LeanBlock, "build", classmethod(counting))
    reconstruct(lean, _images(), cfg, progress=False)
    assert built and all(built)
    monkeypatch.setattr(LeanBlock, "build", classmethod(lambda cls, *a, **k: None))
    reconstruct(own, _images(), cfg, progress=False)
    own_state = own.state_dict()
    assert all(torch.equal(v, own_state[k]) for k, v in lean.state_dict().items())


# --- QDrop's masks and mix (fastpath.masks) ---

@pytest.mark.parametrize("p", [0.5, 0.1, 0.9, 0.75, 0.3])
def test_keep_mask_draws_with_the_asked_probability(p):
    m = keep_mask((64, 16, 28, 28), p, torch.Generator().manual_seed(0))
    assert m.dtype == torch.float32 and m.shape == (64, 16, 28, 28)
    assert bool(((m == 0) | (m == 1)).all())
    assert abs(float(m.mean()) - p) < 0.003  # 802 816 draws: 5 standard deviations < 0.003
    # no structure between neighbours: within a byte, across bytes (8) and across 56-bit words (56)
    flat = m.flatten()
    for lag in (1, 8, 56):
        assert abs(float((flat[:-lag] * flat[lag:]).mean()) - p * p) < 0.003, lag
    same = keep_mask((64, 16, 28, 28), p, torch.Generator().manual_seed(0))
    assert torch.equal(m, same) and not torch.equal(m, keep_mask(m.shape, p, torch.Generator().manual_seed(1)))
    assert bool((keep_mask((3, 5), 1.0, torch.Generator()) == 1).all())
    assert bool((keep_mask((3, 5), 0.0, torch.Generator()) == 0).all())


@pytest.mark.parametrize("p", [0.5, 0.3, 0.6875, 0.0001])
def test_keep_mask_is_a_comparison_of_uniform_draws(p):
    """Each element is [U < p] for U whose binary digits are the same bit of successive 64-bit draws (bit-sliced
    comparison): recomputed here element by element from the same random words."""
    k = int(round(p * 65536))
    m_digits = max(i for i in range(16) if (k >> (15 - i)) & 1) + 1
    n = 56 * 5 + 13
    words = (n + 55) // 56
    planes = torch.empty((m_digits, words), dtype=torch.int64).random_(generator=torch.Generator().manual_seed(4))
    expect = []
    for e in range(n):
        word, bit = divmod(e, 56)
        u = sum(((int(planes[i, word]) >> bit) & 1) << (15 - i) for i in range(m_digits))  # U * 65536, truncated
        expect.append(1.0 if u < k else 0.0)  # truncating U to m digits decides U < p exactly (p has m digits)
    got = keep_mask((n,), p, torch.Generator().manual_seed(4))
    assert got.tolist() == expect


def test_keep_lerp_is_where():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 8, 9, 9, generator=g) * torch.logspace(-8, 8, 9)
    fp = torch.randn(4, 8, 9, 9, generator=g) * 1e6
    q.view(-1)[:5], fp.view(-1)[5:10] = -0.0, -0.0
    keep = keep_mask(q.shape, 0.5, g)
    mixed = keep_lerp(q, fp, keep)
    expect = torch.where(keep.bool(), fp, q)
    assert torch.equal(mixed, expect)  # equal values; a zero's sign may differ (-0.0 == 0.0)
    nonzero = expect != 0
    assert torch.equal(mixed[nonzero].view(torch.int32), expect[nonzero].view(torch.int32))  # same bits
    qg, fg = q.clone().requires_grad_(), fp.clone().requires_grad_()
    keep_lerp(qg, fg, keep).backward(torch.ones_like(q))
    assert torch.equal(fg.grad, keep) and torch.equal(qg.grad, 1 - keep)


# --- the version guard (fastpath.guard) ---

def test_the_guard_admits_the_checked_versions_only(monkeypatch, caplog):
    """Only a checked Brevitas version enables the fast path; any other one disables it with a single warning."""
    monkeypatch.setattr(guard, "_warned", False)
    monkeypatch.setattr(guard, "_installed_brevitas", lambda: sorted(guard.CHECKED_BREVITAS)[0])
    assert fastpath.enabled()
    for version in ("0.12.1", "0.14.0", None):
        monkeypatch.setattr(guard, "_installed_brevitas", lambda version=version: version)
        with caplog.at_level(logging.WARNING, logger="dfq_deploy"):
            assert not fastpath.enabled() and not fastpath.enabled()
    assert len([r for r in caplog.records if "fast path" in r.getMessage()]) == 1


def test_an_unchecked_brevitas_version_takes_brevitas_path(tiny_teacher, monkeypatch):
    """Outside the checked versions every part of the fast path declines: no quantizer is patched, no lean forward
    is built, the weight quantizer keeps Brevitas' forward (the float weight keeps its gradient), and a whole
    reconstruction runs without entering the fast path's code."""
    def entered(*a, **k):
        raise AssertionError("the fast path was used")

    monkeypatch.setattr(guard, "_warned", True)
    monkeypatch.setattr(guard, "_installed_brevitas", lambda: "0.0.1")
    monkeypatch.setattr(fastpath.activation.FusedActivationQuant, "_forward", staticmethod(entered))
    monkeypatch.setattr(fastpath.rounding, "_cached_forward", entered)
    monkeypatch.setattr(LeanBlock, "__init__", entered)
    s = _student(tiny_teacher)
    assert FusedActivationQuant(s).patched == []
    block = find_blocks(s)[1]
    sub = block_module(s, block)
    rounding = [_LearnedRounding(sub.get_submodule(n)) for n in block.compute]
    assert rounding and all(r.layer.weight.requires_grad for r in rounding)
    assert not any("forward" in vars(m) for m in s.modules())
    assert LeanBlock.build(sub, True, set(), 0.5, torch.Generator()) is None
    for r in rounding:
        r.bake()
    hist = reconstruct(s, _images(), ReconstructionConfig(iters=3, batch_size=16), progress=False)
    assert len(hist) == len(find_blocks(s)) and not any("forward" in vars(m) for m in s.modules())
