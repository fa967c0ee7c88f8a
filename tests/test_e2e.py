"""One real run of the installed `dfq-deploy` command on the shipped teacher, at a tiny budget."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_installed_command_runs_end_to_end(tmp_path):
    beside = Path(sys.executable).parent / "dfq-deploy"  # the console script of the environment running the tests
    exe = str(beside) if beside.is_file() else shutil.which("dfq-deploy")
    assert exe, "the dfq-deploy command is not installed: install the package (make test does)"
    out = tmp_path / "run"
    proc = subprocess.run([exe, "train-export", "--target", "onnxruntime", "--steps", "4", "--warmup-steps", "2",
                           "--batch-size", "32", "--eval-limit", "1000", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["accuracy"] > 90.0  # the shipped teacher on the first 1000 test images
    assert report["census"]["integer_compute"] == 22 and report["census"]["float_compute"] == []
    assert report["parity"]["top1_agreement"] >= 99.9
    assert "teacher FP accuracy" in proc.stdout
    # the CI parity gate: `dfq-deploy validate` on this real exported student of the shipped teacher, all 10 000
    # test images, default (strict) thresholds. A change that breaks integer parity turns this red.
    gate = subprocess.run([exe, "validate", str(out), "--quiet"], capture_output=True, text=True, timeout=900)
    assert gate.returncode == 0, gate.stdout[-2000:] + gate.stderr[-2000:]
    validation = json.loads((out / "validation.json").read_text())
    assert validation["samples"] == 10000 and validation["passed"]
    assert validation["runtimes"]["onnxruntime"]["max_diff_steps"] <= 1.0
    assert "tensorrt" in validation["skipped"] or "tensorrt" in validation["runtimes"]
