"""`dfq-deploy validate`: the gate passes a clean export, names a planted fault, and writes readable reports."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from dfq_deploy.cli.main import main
from dfq_deploy.runtimes import find_runtime

from .faults import plant_scale_error

BROWSER = shutil.which("chromium-headless-shell") or shutil.which("chromium")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real train-export run of a tiny teacher (PTQ, W4A4) on 300 Fashion-MNIST test images."""
    import torch
    from safetensors.torch import save_file

    from dfq_deploy.data import FASHION_MNIST_CLASSES
    from dfq_deploy.models import ModelCard, build_model

    root = tmp_path_factory.mktemp("val")
    torch.manual_seed(0)
    teacher = build_model("resnet8", width=4, in_channels=1, num_classes=10)
    save_file(teacher.state_dict(), str(root / "t.safetensors"))
    card = ModelCard(arch="resnet8", arch_kwargs={"width": 4, "in_channels": 1, "num_classes": 10},
                     input_shape=(1, 28, 28), mean=(0.2860,), std=(0.3530,), class_names=FASHION_MNIST_CLASSES,
                     weights="t.safetensors")
    (root / "t.json").write_text(card.to_json())
    r = CliRunner().invoke(main, ["train-export", "--teacher", str(root / "t.json"), "--recipe", "ptq",
                                  "--set", "source=noise", "--eval-limit", "300", "--out", str(root / "run"),
                                  "--quiet"])
    assert r.exit_code == 0, r.output
    return root / "run"


def test_train_export_writes_the_validation_reports(run_dir):
    v = json.loads((run_dir / "validation.json").read_text())
    assert v["passed"] and v["reference"] == "torch" and list(v["runtimes"]) == ["onnxruntime"]
    assert (run_dir / "validation.html").stat().st_size > 10_000
    # where parity was proven: the CPU, its int8 instructions, ONNX Runtime's version; the model is portable
    from dfq_deploy.isa import cpu_info

    assert v["cpu"]["features"] == cpu_info()["features"] and v["cpu"]["int8_dot"] in ("int32", "int16-pairs")
    assert v["cpu"]["onnxruntime"] and v["portable"] is True and v["pair_sums"]["exact_without_vnni"]
    page = (run_dir / "validation.html").read_text()
    assert "Where parity was proven" in page and v["cpu"]["model"] in page
    report = json.loads((run_dir / "report.json").read_text())
    assert report["machine"]["cpu_info"] == v["cpu"] and report["portability"]["portable"] is True
    summary = (run_dir / "summary.txt").read_text()
    assert "same integers on every CPU" in summary and "checked on" in summary


def test_validate_a_run_passes_and_reports_every_measure(run_dir, tmp_path):
    r = CliRunner().invoke(main, ["validate", str(run_dir), "--limit", "300", "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output and "tensorrt" in r.output
    v = json.loads((tmp_path / "validation.json").read_text())
    ort = v["runtimes"]["onnxruntime"]
    assert ort["top1_agreement"] == 100.0 and ort["max_diff_steps"] <= 1.0 and ort["mean_diff_steps"] is not None
    assert v["layers"]["passed"] and v["census"]["all_integer"] and "layer-local check" in r.output
    assert set(ort["per_class_accuracy"]) <= set(v["class_names"]) and len(ort["per_class_accuracy"]) >= 5
    assert sum(ort["step_histogram"].values()) == 300 * 10
    assert np.array(ort["confusion"]).sum() == 300
    if find_runtime("tensorrt")[0] is None:  # skipped with the reason, never counted as compared
        assert "TensorRT is not installed" in v["skipped"]["tensorrt"] and "tensorrt" not in v["runtimes"]
    else:
        assert v["runtimes"]["tensorrt"]["passed"] and "tensorrt" not in v["skipped"]


def test_a_planted_fault_is_named_and_fails_the_gate(run_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    victim = plant_scale_error(bad / "model.onnx", pick=lambda n: 4)
    r = CliRunner().invoke(main, ["validate", str(bad), "--limit", "300", "--runtimes", "torch,onnxruntime",
                                  "--quiet"])
    assert r.exit_code == 7, r.output
    assert victim in r.output and "parity gate failed: layer" in r.output and "Traceback" not in r.output
    v = json.loads((bad / "validation.json").read_text())
    first = v["layers"]["first_failure"]
    assert not v["passed"] and first["node"] == victim and v["failures"][0].startswith("layer ")
    assert len(first["shape"]) == 4 and (first["max_steps"] > 1 or first["mismatched"] > 0.001)
    assert victim in (bad / "validation.html").read_text()


def test_bare_onnx_synthetic_data_and_bad_input(run_dir, tmp_path):
    onnx_copy = tmp_path / "m.onnx"
    shutil.copy(run_dir / "model.onnx", onnx_copy)
    r = CliRunner().invoke(main, ["validate", str(onnx_copy), "--data", "synthetic", "--limit", "64", "--quiet"])
    assert r.exit_code == 0, r.output
    v = json.loads((tmp_path / "validation.json").read_text())
    assert v["reference"].startswith("onnx") and "torch" in v["skipped"] and not v["labelled"]
    assert v["runtimes"]["onnxruntime"]["accuracy"] is None and v["samples"] == 64
    r = CliRunner().invoke(main, ["validate", str(onnx_copy), "--runtimes", "coreml"])
    assert r.exit_code == 2 and "unknown runtime" in r.output
    r = CliRunner().invoke(main, ["validate", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "not found" in r.output
    r = CliRunner().invoke(main, ["validate", str(onnx_copy), "--data", "imagefolder:/nonexistent"])
    assert r.exit_code == 3 and "not found" in r.output


def test_imagefolder_labels_come_from_the_folder_names(run_dir, tmp_path):
    from PIL import Image

    from dfq_deploy.data import load_fashion_mnist

    imgs, labels = load_fashion_mnist("test")
    for cls, name in ((1, "Trouser"), (8, "Bag")):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i, idx in enumerate(np.flatnonzero(labels.numpy() == cls)[:10]):
            Image.fromarray(imgs[idx, 0].numpy()).resize((56, 56)).save(tmp_path / "imgs" / name / f"{i}.png")
    r = CliRunner().invoke(main, ["validate", str(run_dir), "--data", f"imagefolder:{tmp_path / 'imgs'}",
                                  "--out", str(tmp_path / "rep"), "--quiet"])
    assert r.exit_code == 0, r.output
    v = json.loads((tmp_path / "rep" / "validation.json").read_text())
    assert v["labelled"] and v["samples"] == 20
    assert set(v["runtimes"]["onnxruntime"]["per_class_accuracy"]) == {"Trouser", "Bag"}


def test_html_report_opens_in_a_headless_browser_and_shows_its_figures(run_dir, tmp_path):
    if BROWSER is None:
        if os.environ.get("DFQ_REQUIRE_BROWSER"):  # `make test` installs it, so there it must be found
            pytest.fail("chromium-headless-shell is missing although `make test` installs it")
        pytest.skip("no headless Chromium (make test installs chromium-headless-shell)")
    page = (run_dir / "validation.html").resolve()
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*cmd, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    expected = int(dom.split('data-figures="')[1].split('"')[0])
    loaded = int(dom.split('data-figures-loaded="')[1].split('"')[0])  # set by the page once images decoded
    assert expected >= 3 and loaded == expected
    shot = tmp_path / "shot.png"
    subprocess.run([*cmd, f"--screenshot={shot}", "--window-size=1100,1600", page.as_uri()], capture_output=True,
                   timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (1600, 1100) and pixels.std() > 10  # a rendered page, not a blank one


@pytest.mark.no_tensorrt
def test_a_validation_that_compared_nothing_is_an_error_not_a_pass(run_dir, tmp_path):
    onnx_copy = tmp_path / "m.onnx"
    shutil.copy(run_dir / "model.onnx", onnx_copy)
    # every runtime asked for is missing here: nothing compared -> exit 6, no report
    r = CliRunner().invoke(main, ["validate", str(run_dir), "--runtimes", "tensorrt", "--limit", "50",
                                  "--out", str(tmp_path / "o1"), "--quiet"])
    assert r.exit_code == 6 and "nothing was compared" in r.output and "PASS" not in r.output
    assert not (tmp_path / "o1" / "validation.json").exists()
    # a bare .onnx has no PyTorch model: "torch" alone has no reference to be compared with -> exit 2
    r = CliRunner().invoke(main, ["validate", str(onnx_copy), "--runtimes", "torch", "--limit", "50", "--quiet"])
    assert r.exit_code == 2 and "nothing to compare" in r.output and "PASS" not in r.output
    # the reference compared with itself is no comparison either
    r = CliRunner().invoke(main, ["validate", str(run_dir), "--runtimes", "torch", "--limit", "50", "--quiet"])
    assert r.exit_code == 2 and "with itself" in r.output


def test_run_files_are_tamper_evident(run_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    manifest = json.loads((run_dir / "manifest.json").read_text())["files"]
    assert {"model.onnx", "student.safetensors", "report.json", "validation.html"} <= set(manifest)
    assert "lock" not in manifest and "checkpoint.pt" not in manifest and "run.json" not in manifest
    # a report edited after the run: validated all the same, and the change is reported
    edited = tmp_path / "edited"
    shutil.copytree(run_dir, edited)
    (edited / "report.json").write_text((edited / "report.json").read_text().replace('"created"', '"made"', 1))
    r = CliRunner().invoke(main, ["validate", str(edited), "--limit", "50", "--quiet"])
    assert r.exit_code == 0 and "note: report.json changed since the run wrote it" in r.output, r.output
    assert json.loads((edited / "validation.json").read_text())["changed_since_run"] == ["report.json"]
    r = CliRunner().invoke(main, ["validate", str(run_dir), "--limit", "50", "--quiet", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0 and "changed since" not in r.output
    # weights swapped under a model.onnx exported from other weights (no manifest to catch it first)
    swapped = tmp_path / "swapped"
    shutil.copytree(run_dir, swapped)
    (swapped / "manifest.json").unlink()
    state = load_file(str(swapped / "student.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1 and bool(v.abs().sum() > 0))
    state[key] = state[key] * 1.01
    save_file(state, str(swapped / "student.safetensors"))
    from dfq_deploy.errors import ModelError
    from dfq_deploy.rundir import verify_run

    with pytest.raises(ModelError, match="does not belong to"):
        verify_run(swapped)
    for cmd in (["validate", str(swapped), "--limit", "50", "--quiet"],
                ["export", str(swapped), "--profile", "tensorrt"]):
        r = CliRunner().invoke(main, cmd)
        assert r.exit_code == 4 and "does not belong to" in r.output and "Traceback" not in r.output, r.output
