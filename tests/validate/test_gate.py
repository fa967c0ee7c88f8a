"""The parity gate passes correct exports at every width and profile, and fails each planted fault naming its layer."""

import shutil

import numpy as np
import pytest
import torch

from dfq_deploy.data import EvalSet
from dfq_deploy.errors import ConfigError, ModelError
from dfq_deploy.export import export_onnx
from dfq_deploy.quant import QuantScheme, calibrate, quantize_model
from dfq_deploy.runtimes.ort import OnnxRuntime
from dfq_deploy.validate import Gate, check_layers, check_parity
from dfq_deploy.validate.local import activation_chains

from . import faults


def _student(bits: str):
    from dfq_deploy.models import build_model

    torch.manual_seed(0)
    q = quantize_model(build_model("resnet8", width=8).eval(), QuantScheme.from_tag(bits, trt_compatible=True))
    calibrate(q, [torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))])
    return q.eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """(student, {profile: path}) per bit width: correct exports of a small residual network."""
    root = tmp_path_factory.mktemp("gate")
    out = {}
    for bits in ("W8A8", "W4A4", "W2A2"):
        q = _student(bits)
        paths = {}
        for profile in ("onnxruntime", "tensorrt"):
            paths[profile] = root / f"{bits}-{profile}.onnx"
            export_onnx(q, paths[profile], (1, 28, 28), profile=profile)
        out[bits] = (q, paths)
    return out


def _data(n=256, scale=1.0) -> EvalSet:
    """Unlabelled images; ``scale`` > 1 drives activations past their calibrated range (saturation)."""
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((n, 1, 28, 28)).astype(np.float32) * scale)
    return EvalSet(x, torch.full((n,), -1), (), "noise")


def _gate(q, path, data, profile="onnxruntime", gate=Gate()):
    with OnnxRuntime(path) as rt:
        out = rt.infer(data.images.numpy())
    with torch.no_grad():
        ref = torch.as_tensor(getattr(q(data.images), "value", q(data.images))).numpy()
    return check_parity("torch", ref, {"onnxruntime": out}, data, path, gate, student=q, profile=profile)


@pytest.mark.parametrize("bits", ["W8A8", "W4A4", "W2A2"])
@pytest.mark.parametrize("profile", ["onnxruntime", "tensorrt"])
def test_correct_exports_pass_the_default_gate(exports, bits, profile):
    q, paths = exports[bits]
    r = _gate(q, paths[profile], _data(), profile)
    assert r, r.failures()
    assert len(r.layers.layers) == len(activation_chains(__import__("onnx").load(str(paths[profile])))) > 10
    assert all(layer.max_steps <= 1.0 + 1e-3 for layer in r.layers.layers)
    assert (r.census is not None) == (profile == "onnxruntime")
    d = r.to_dict()
    assert d["passed"] and d["failures"] == [] and d["layers"]["first_failure"] is None


def test_the_bare_graph_reference_passes_too(exports):
    _, paths = exports["W8A8"]
    r = check_layers(paths["onnxruntime"], _data(64).images.numpy())
    assert r and r.reference.startswith("onnx") and len(r.layers) > 10


def _planted(exports, tmp_path, bits, profile, plant, **kw):
    q, paths = exports[bits]
    bad = tmp_path / "bad.onnx"
    shutil.copy(paths[profile], bad)
    victim = plant(bad, **kw)
    return q, bad, victim


@pytest.mark.parametrize("bits,profile,plant,scale", [
    ("W4A4", "onnxruntime", faults.plant_scale_error, 1.0),
    ("W8A8", "onnxruntime", faults.plant_scale_error, 1.0),
    ("W4A4", "onnxruntime", faults.plant_zero_point_error, 1.0),
    ("W8A8", "tensorrt", faults.plant_zero_point_error, 1.0),
    ("W4A4", "onnxruntime", faults.plant_missing_clip, 3.0),   # values past the range: wrong codes
    ("W4A4", "onnxruntime", faults.plant_missing_clip, 1.0),   # latent: caught by the integer range itself
    ("W8A8", "tensorrt", faults.plant_missing_relu, 1.0),
    ("W4A4", "onnxruntime", faults.plant_swapped_channel_scales, 1.0),
    ("W8A8", "tensorrt", faults.plant_swapped_channel_scales, 1.0),
    ("W4A4", "onnxruntime", faults.plant_wrong_add_scale, 1.0),
    ("W8A8", "onnxruntime", faults.plant_wrong_add_scale, 1.0),
])
def test_each_planted_fault_fails_the_gate_and_names_its_layer(exports, tmp_path, bits, profile, plant, scale):
    q, bad, victim = _planted(exports, tmp_path, bits, profile, plant)
    r = _gate(q, bad, _data(scale=scale), profile)
    assert not r
    first = r.layers.first_failure
    assert first is not None and first.node == victim, (victim, r.failures())
    assert victim in r.failures()[0]


def test_a_float_conv_fails_the_integer_census(exports, tmp_path):
    q, bad, conv = _planted(exports, tmp_path, "W4A4", "onnxruntime", faults.plant_float_conv)
    r = _gate(q, bad, _data())
    assert r.layers, "the function is unchanged: every activation still matches"
    assert not r and not r.census["all_integer"]
    assert any(conv in f and "float compute" in f for f in r.failures())


def test_end_to_end_thresholds_are_gated_and_steps_only_reported(exports):
    q, paths = exports["W4A4"]
    data = _data()
    with torch.no_grad():
        ref = q(data.images).value.numpy() if hasattr(q(data.images), "value") else q(data.images).numpy()
    worse = ref.copy()
    worse[:, 0] += 1000.0   # every image now predicts class 0
    r = check_parity("torch", ref, {"onnxruntime": worse}, data, paths["onnxruntime"], Gate(), student=q,
                     profile="onnxruntime")
    assert not r and r.layers and any("top-1 agreement" in f for f in r.failures())
    shifted = ref + 3 * r.runtimes["onnxruntime"].output_step   # 3 output steps everywhere, same argmax
    r = check_parity("torch", ref, {"onnxruntime": shifted}, data, paths["onnxruntime"], Gate(), student=q,
                     profile="onnxruntime")
    assert r and r.runtimes["onnxruntime"].max_diff_steps == pytest.approx(3, abs=0.01)
    r = check_parity("torch", ref, {"onnxruntime": shifted}, data, paths["onnxruntime"], Gate(max_logit_steps=1),
                     student=q, profile="onnxruntime")
    assert not r and "output steps" in r.failures()[0]


def test_a_graph_of_another_model_is_refused(exports):
    from dfq_deploy.models import build_model

    _, paths = exports["W4A4"]
    other = quantize_model(build_model("resnet20", width=4).eval(), QuantScheme(4, 4))
    calibrate(other, [torch.randn(8, 1, 28, 28)])
    with pytest.raises(ModelError, match="quantized activations"):
        check_layers(paths["onnxruntime"], _data(8).images.numpy(), other.eval())


@pytest.mark.parametrize("kw", [{"min_agreement": 101}, {"layer_max_mismatch": 2}, {"max_accuracy_diff": -1},
                                {"layer_samples": 0}, {"max_logit_steps": float("nan")}])
def test_bad_thresholds_are_config_errors(kw):
    with pytest.raises(ConfigError):
        Gate(**kw)


class _RoundingDecides(torch.nn.Module):
    """Two logits whose order float32 rounding decides: ``(x + 1e8) - 1e8`` is ``x`` in float64 but a multiple of
    8 in float32, against ``x / 2``."""

    def forward(self, x):
        x = x.flatten(1)[:, :1] * 3
        return torch.cat([(x + 1e8) - 1e8, x / 2], 1)


def test_float64_logits_show_how_far_rounding_decides_the_top1():
    from dfq_deploy.validate.gate import float64_logits

    data = EvalSet(torch.randn(200, 1, 2, 2, generator=torch.Generator().manual_seed(0)),
                   torch.full((200,), -1), ["a", "b"], "noise")
    model = _RoundingDecides()
    with torch.no_grad():
        reference = model(data.images).numpy()
    assert (float64_logits(model, data).argmax(1) == reference.argmax(1)).mean() < 0.6
    stable = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        reference = stable(data.images).numpy()
    assert (float64_logits(stable, data).argmax(1) == reference.argmax(1)).all()


def _moved(ref: np.ndarray, share: float) -> np.ndarray:
    """``ref`` with the top-1 of its first ``share`` of rows moved (their logits reversed)."""
    out = ref.copy()
    k = round(share * len(ref))
    out[:k] = out[:k, ::-1]
    assert (out.argmax(1) != ref.argmax(1)).sum() == k
    return out


def test_a_runtime_is_held_to_what_rounding_allows_where_the_reference_itself_moves():
    from dfq_deploy.validate.gate import GateResult, rounding_bound
    from dfq_deploy.validate.parity import compare_logits

    ref = np.random.default_rng(0).standard_normal((200, 10)).astype(np.float32)
    itself = compare_logits(ref, _moved(ref, 0.04), runtime="float64")  # the reference's own top-1 moves on 4 %
    near = rounding_bound(compare_logits(ref, _moved(ref, 0.05), runtime="onnxruntime"), itself, Gate())
    assert near and near.min_agreement == 94.0 and near.rounding_baseline == 96.0
    far = rounding_bound(compare_logits(ref, _moved(ref, 0.10), runtime="onnxruntime"), itself, Gate())
    assert not far and "more than rounding explains" in far.failures()[0]
    assert not GateResult(Gate(), "torch", {"onnxruntime": far})
    # where the reference holds its top-1, the gate's own threshold stands
    steady = compare_logits(ref, ref, runtime="float64")
    row = compare_logits(ref, _moved(ref, 0.05), runtime="onnxruntime")
    assert rounding_bound(row, steady, Gate()) is row and not row and "rounding" not in row.failures()[0]
    # with labels: the accuracy difference may exceed the gate's by the reference's own float64 difference
    labels = ref.argmax(1)
    itself = compare_logits(ref, _moved(ref, 0.04), labels, runtime="float64")
    ok = rounding_bound(compare_logits(ref, _moved(ref, 0.045), labels, runtime="onnxruntime"), itself, Gate())
    assert ok and ok.max_accuracy_diff == 4.5
    worse = rounding_bound(compare_logits(ref, _moved(ref, 0.06), labels, runtime="onnxruntime"), itself, Gate())
    assert not worse and any("accuracy" in f and "more than rounding" in f for f in worse.failures())


def test_the_gate_measures_rounding_only_when_every_layer_passes_and_end_to_end_does_not(exports, monkeypatch):
    import dfq_deploy.validate.gate as gate_mod

    q, paths = exports["W4A4"]
    data = _data()
    with torch.no_grad():
        ref = torch.as_tensor(getattr(q(data.images), "value", q(data.images))).numpy()
    calls = []

    def shaky(student, data_):  # the reference's float64 evaluation, as a rounding-bound model would give it
        calls.append(student)
        return _moved(ref, 0.04)

    monkeypatch.setattr(gate_mod, "float64_logits", shaky)
    passing = check_parity("torch", ref, {"onnxruntime": ref.copy()}, data, paths["onnxruntime"], Gate(), student=q,
                           profile="onnxruntime")
    assert passing and not calls and passing.float64_agreement is None
    r = check_parity("torch", ref, {"onnxruntime": _moved(ref, 0.05)}, data, paths["onnxruntime"], Gate(),
                     student=q, profile="onnxruntime")
    assert calls == [q] and r.float64_agreement == pytest.approx(100 * (1 - 10 / 256)) and r, r.failures()
    d = r.to_dict()
    assert d["passed"] and d["runtimes"]["onnxruntime"]["rounding_baseline"] == r.float64_agreement
    r = check_parity("torch", ref, {"onnxruntime": _moved(ref, 0.10)}, data, paths["onnxruntime"], Gate(),
                     student=q, profile="onnxruntime")
    assert not r and "more than rounding explains" in r.failures()[0]
