import numpy as np
import pytest
import torch

from dfq_deploy.config import config_from_dict
from dfq_deploy.errors import ConfigError
from dfq_deploy.quant import QuantScheme, ReconstructionConfig, calibrate, quantize_model, reconstruct
from dfq_deploy.quant.reconstruct import block_module, find_blocks
from dfq_deploy.recipes import PTQConfig


def _images(n=96, seed=1):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)).clamp(-0.8, 2.0)


def _student(teacher, bits="W3A3", grid="narrow"):
    s = quantize_model(teacher, QuantScheme.from_tag(bits, weight_grid=grid))
    calibrate(s, [_images()])
    return s.eval()


def _logit_error(teacher, student, x):
    with torch.no_grad():
        return float((teacher(x) - student(x)).pow(2).sum(1).mean())


def test_blocks_cover_every_layer_once_and_chain(tiny_teacher):
    s = _student(tiny_teacher)
    blocks = find_blocks(s)
    # resnet8: stem, three basic blocks, classifier
    assert [b.name for b in blocks] == ["conv1", "layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1", "fc"]
    compute = [c for b in blocks for c in b.compute]
    layers = [n for n, m in s.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert sorted(compute) == sorted(layers) and len(set(compute)) == len(compute)
    assert all(b.input is a.output for a, b in zip(blocks, blocks[1:]))
    # the blocks run one after the other compute exactly what the whole student computes
    x = _images(8, seed=3)
    with torch.no_grad():
        y = x
        for b in blocks:
            y = block_module(s, b)(y)
        assert torch.equal(getattr(y, "value", y), getattr(s(x), "value", s(x)))


def test_reconstruction_moves_the_student_towards_the_float_teacher(tiny_teacher):
    s = _student(tiny_teacher)
    held_out = _images(256, seed=7)
    before = _logit_error(tiny_teacher, s, held_out)
    keys = set(s.state_dict())
    hist = reconstruct(s, _images(), ReconstructionConfig(iters=60, batch_size=16), progress=False)
    after = _logit_error(tiny_teacher, s, held_out)
    assert len(hist) == 5 and all(h["rec_after"] <= h["rec_before"] * 1.05 for h in hist)
    assert after < 0.9 * before, (before, after)
    assert set(s.state_dict()) == keys  # same structure: reloads from safetensors, exports the same graph
    assert not s.training


@pytest.mark.parametrize("grid", ["narrow", "full"])
def test_baked_weights_keep_their_learned_codes_with_nearest_rounding(tiny_teacher, grid):
    from brevitas.core.function_wrapper import RoundSte

    s = _student(tiny_teacher, grid=grid)
    layers = [m for m in s.modules() if hasattr(m, "quant_weight")]
    steps = [m.quant_weight().scale.detach().clone() for m in layers]
    hist = reconstruct(s, _images(), ReconstructionConfig(iters=30, batch_size=16), progress=False)
    assert sum(h["rounding_changed"] for h in hist) > 0
    assert layers
    for m, step in zip(layers, steps):
        assert torch.allclose(m.quant_weight().scale, step, rtol=1e-6, atol=0)  # the weight's step did not move
        assert isinstance(m.weight_quant.tensor_quant.int_quant.float_to_int_impl, RoundSte)
        q = m.quant_weight()
        codes = q.value / q.scale
        assert torch.allclose(codes, codes.round(), atol=1e-4)
        # every float weight lies inside its code's rounding bin, at least 0.1 step from the boundary
        assert float((m.weight / q.scale - codes).abs().max()) <= 0.4 + 1e-4


@pytest.mark.parametrize("grid", ["narrow", "full"])
def test_reconstructed_student_exports_to_integer_kernels_with_parity(tmp_path, tiny_teacher, grid):
    from dfq_deploy.export import export_onnx, ort_kernel_census
    from dfq_deploy.export.inspect import output_quant_step
    from dfq_deploy.runtimes.ort import OnnxRuntime
    from dfq_deploy.runtimes.torch_ref import TorchRuntime

    s = _student(tiny_teacher, "W4A4", grid)
    hist = reconstruct(s, _images(), ReconstructionConfig(iters=30, batch_size=16), progress=False)
    assert sum(h["rounding_changed"] for h in hist) > 0  # rounding really moved off nearest somewhere
    path = tmp_path / "m.onnx"
    export_onnx(s, path, (1, 28, 28))
    assert ort_kernel_census(path).all_integer
    x = _images(128, seed=11).numpy().astype(np.float32)
    with TorchRuntime(s) as t, OnnxRuntime(path) as o:
        ref, out = t.infer(x), o.infer(x)
    assert np.abs(ref - out).max() <= output_quant_step(path) * 1.001


def _act_steps(student) -> dict[str, float]:
    from dfq_deploy.quant.fastpath import is_act_quant

    return {n: float(m.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.value.detach())
            for n, m in student.named_modules() if is_act_quant(m)
            and hasattr(m.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl, "value")}


def test_a_step_size_cannot_learn_its_way_to_nothing(tiny_teacher):
    """However hard the optimiser pushes (here a step-size learning rate a thousand times the default, which sends
    Adam's first steps far below zero), no activation step size ends below MIN_STEP_FRACTION of its calibrated
    value: a step of almost nothing is a branch switched off in a way integer runtimes do not reproduce."""
    from dfq_deploy.quant.reconstruct import MIN_STEP_FRACTION

    s = _student(tiny_teacher, "W2A2")
    before = _act_steps(s)
    reconstruct(s, _images(), ReconstructionConfig(iters=20, batch_size=16, scale_lr=10.0), progress=False)
    after = _act_steps(s)
    assert before.keys() == after.keys() and before
    assert all(after[n] >= before[n] * MIN_STEP_FRACTION * (1 - 1e-6) for n in before), (before, after)
    assert any(after[n] <= before[n] * MIN_STEP_FRACTION * 1.001 for n in before)  # the floor was reached


def test_reconstruction_is_deterministic_for_a_seed(tiny_teacher):
    a, b = _student(tiny_teacher), _student(tiny_teacher)
    for s in (a, b):
        reconstruct(s, _images(), ReconstructionConfig(iters=10, batch_size=16, seed=3), progress=False)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_augmented_copies_join_the_reconstruction_set(tiny_teacher):
    s = _student(tiny_teacher)
    held_out = _images(256, seed=7)
    before = _logit_error(tiny_teacher, s, held_out)
    hist = reconstruct(s, _images(), ReconstructionConfig(iters=60, batch_size=16, augment=2), progress=False)
    assert [h["images"] for h in hist] == [3 * 96] * len(hist)
    assert _logit_error(tiny_teacher, s, held_out) < 0.9 * before
    plain = _student(tiny_teacher)
    hist = reconstruct(plain, _images(), ReconstructionConfig(iters=5, batch_size=16), progress=False)
    assert hist[0]["images"] == 96


@pytest.mark.parametrize("bad", [{"recon_iters": -1}, {"recon_qdrop": 1.5}, {"recon_round_lr": 0.0},
                                 {"recon_batch": 0}, {"recon_augment": -1}, {"recon_augment": 100}])
def test_bad_reconstruction_options_are_config_errors(bad):
    with pytest.raises(ConfigError, match="reconstruction"):
        config_from_dict(PTQConfig, bad)
