"""Same integers on every CPU: the exported model natively and on an emulated AVX2 CPU without VNNI.

`make test` installs qemu-user-static on x86 hosts (with DFQ_REQUIRE_QEMU set there: a missing emulator fails, not skips).
"""

import os

import numpy as np
import pytest

from dfq_deploy.runtimes.emulated import EmulatedOnnxRuntime, emulator
from dfq_deploy.runtimes.ort import OnnxRuntime

needs_qemu = pytest.mark.skipif(emulator() is None and not os.environ.get("DFQ_REQUIRE_QEMU"),
                                reason="qemu-x86_64-static missing, or not an x86 host")


def _export(tmp_path, tag, portable):
    from dfq_deploy.export import export_onnx
    from dfq_deploy.models import SHIPPED_TEACHER, load_teacher
    from dfq_deploy.quant import QuantScheme, calibrate, quantize_model

    teacher, card = load_teacher(SHIPPED_TEACHER)
    q = quantize_model(teacher, QuantScheme.from_tag(tag, portable=portable))
    calibrate(q, [_images()])
    path = tmp_path / f"{tag}_{portable}.onnx"
    export_onnx(q, path, tuple(card.input_shape), portable=portable)
    return path


def _images(n=32):
    from dfq_deploy.data import load_eval_set
    from dfq_deploy.models import SHIPPED_TEACHER, load_teacher

    _, card = load_teacher(SHIPPED_TEACHER)
    return load_eval_set("fashion-mnist", card.mean, card.std, limit=n).images


@needs_qemu
@pytest.mark.parametrize("tag", ["W8A8", "W4A4", "W3A3"])
def test_default_export_gives_the_same_logits_on_emulated_avx2(tmp_path, tag):
    assert emulator() is not None, "qemu-x86_64-static is required here (make test installs it)"
    x = _images().numpy()
    path = _export(tmp_path, tag, portable=True)
    with OnnxRuntime(path, threads=1) as native, EmulatedOnnxRuntime(path) as emulated:
        here, there = native.infer(x), emulated.infer(x)
    assert emulated.child_cpu["features"] == ["avx2"] and emulated.child_cpu["int8_dot"] == "int16-pairs"
    np.testing.assert_array_equal(here, there)


@needs_qemu
def test_planted_non_portable_export_differs_on_emulated_avx2(tmp_path):
    """Full 8-bit weights after 8-bit activations saturate AVX2's 16-bit pair sums: the check must see it. The
    reference is the graph's own semantics (no graph optimisation: every Q/DQ in float, no integer kernel), which is
    the same on every CPU, so the test means the same on a host with VNNI and on one without; rounding ties move a
    logit by one output step at most, saturation by many."""
    from dfq_deploy.export.inspect import output_quant_step

    x = _images().numpy()
    path = _export(tmp_path, "W8A8", portable=False)
    with OnnxRuntime(path, threads=1, optimize=False) as plain, EmulatedOnnxRuntime(path) as emulated:
        exact, there = plain.infer(x), emulated.infer(x)
    assert np.abs(exact - there).max() > 2 * output_quant_step(path)
    portable = _export(tmp_path, "W8A8", portable=True)
    with OnnxRuntime(portable, threads=1, optimize=False) as plain, EmulatedOnnxRuntime(portable) as emulated:
        assert np.abs(plain.infer(x) - emulated.infer(x)).max() <= 1.001 * output_quant_step(portable)


def test_emulator_is_reported_missing_off_x86(monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert emulator() is None and not EmulatedOnnxRuntime.is_available()
    why, fix = EmulatedOnnxRuntime.unavailable_reason()
    assert "qemu-x86_64-static" in why and "\n" not in why and "qemu-user-static" in fix
