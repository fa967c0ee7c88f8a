"""The lean training forward of a reconstruction block (issue 14) against Brevitas' own path."""

import pytest
import torch

from dfq_deploy.quant import QuantScheme, calibrate, quantize_model, reconstruct
from dfq_deploy.quant.fused import FusedActivationQuant
from dfq_deploy.quant.lean import LeanBlock
from dfq_deploy.quant.reconstruct import (ReconstructionConfig, _LearnedRounding, _QDrop, _scale_params, _value,
                                          block_module, find_blocks)


def _images(n=64, seed=1):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)).clamp(-0.8, 2.0)


def _student(teacher, bits):
    s = quantize_model(teacher, QuantScheme.from_tag(bits))
    calibrate(s, [_images()])
    return s.eval()


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
