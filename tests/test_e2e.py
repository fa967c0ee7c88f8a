"""Real runs of the installed `dfq-deploy` command on the shipped teacher, and the CI parity gate."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _exe() -> str:
    beside = Path(sys.executable).parent / "dfq-deploy"  # the console script of the environment running the tests
    exe = str(beside) if beside.is_file() else shutil.which("dfq-deploy")
    assert exe, "the dfq-deploy command is not installed: install the package (make test does)"
    return exe


@pytest.mark.slow
def test_installed_command_runs_end_to_end(tmp_path):
    """The main job (default recipe: ZeroQ calibration + block reconstruction) at a tiny budget runs end to end,
    exports an all-integer model and passes the parity gate with the defaults every user gets (no gate flag)."""
    out = tmp_path / "run"
    proc = subprocess.run([_exe(), "train-export", "--target", "onnxruntime", "--set", "zeroq_steps=5",
                           "--set", "calib_batches=1", "--set", "recon_iters=5",
                           "--batch-size", "32", "--eval-limit", "1000", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["accuracy"] > 90.0  # the shipped teacher on the first 1000 test images
    assert report["census"]["integer_compute"] == 22 and report["census"]["float_compute"] == []
    assert report["gate"]["passed"] and report["gate"]["failures"] == []
    assert report["gate"]["layers"]["worst_steps"] <= 1.0 and report["gate"]["layers"]["samples"] == 256
    assert (out / "validation.html").is_file() and "teacher FP accuracy" in proc.stdout


@pytest.mark.slow
def test_ci_parity_gate_on_a_student_of_the_shipped_teacher(tmp_path):
    """The CI gate: `dfq-deploy validate` with its defaults (every activation layer-local within one step and 0.1 %
    of elements, agreement >= 98 %, accuracy within 0.5 pt, integer census) on a real exported W4A4 student of the
    shipped teacher (noise-calibrated PTQ: deterministic, seconds to make), over all 10 000 test images. A change
    that breaks integer parity (export, graph passes, runtime) turns this red."""
    out = tmp_path / "run"
    made = subprocess.run([_exe(), "train-export", "--recipe", "ptq", "--set", "source=noise", "--bits", "W4A4",
                           "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    gate = subprocess.run([_exe(), "validate", str(out), "--quiet"], capture_output=True, text=True, timeout=900)
    assert gate.returncode == 0, gate.stdout[-2000:] + gate.stderr[-2000:]
    validation = json.loads((out / "validation.json").read_text())
    assert validation["samples"] == 10000 and validation["passed"] and validation["reference"] == "torch"
    assert validation["runtimes"]["onnxruntime"]["top1_agreement"] >= 99.9  # this student: 100 % measured
    assert validation["layers"]["passed"] and len(validation["layers"]["layers"]) == 33
    assert validation["census"]["all_integer"]
    from dfq_deploy.runtimes import find_runtime

    if find_runtime("tensorrt")[0] is None:  # skipped with its reason, not counted as compared
        assert "tensorrt" in validation["skipped"] and "tensorrt" not in validation["runtimes"]
    else:
        assert validation["runtimes"]["tensorrt"]["passed"]
