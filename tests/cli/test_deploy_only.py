"""A deployment device installs dfq-deploy without the `train` extra (docs/jetson.md): no Brevitas, torchvision or
onnxoptimizer. The commands a board runs must work there, and the others must say which extra they need. Emulated
here by making those imports fail in a fresh process (a second full install of torch would cost minutes)."""

import importlib.util
import subprocess
import sys

import pytest

BLOCK = ("import sys\n"
         "for m in ('brevitas', 'torchvision', 'onnxoptimizer'):\n"
         "    sys.modules[m] = None  # what `import` finds when the train extra is not installed\n"
         "from dfq_deploy.cli import main\n"
         "main()\n")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import torch

    from dfq_deploy.export import export_onnx
    from dfq_deploy.models import build_model
    from dfq_deploy.quant import QuantScheme, calibrate, quantize_model

    root = tmp_path_factory.mktemp("deploy")
    torch.manual_seed(0)
    q = quantize_model(build_model("resnet8", width=4).eval(), QuantScheme(8, 8))
    calibrate(q, [torch.randn(16, 1, 28, 28)])
    meta = {"dfq_deploy.input_shape": "[1, 28, 28]", "dfq_deploy.mean": "[0.0]", "dfq_deploy.std": "[1.0]"}
    return export_onnx(q.eval(), root / "m.onnx", (1, 28, 28), metadata=meta).path


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-c", BLOCK, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_board_commands_work_without_the_train_extra(exported):
    r = _cli("inspect", str(exported), cwd=exported.parent)
    assert r.returncode == 0 and "ALL INTEGER" in r.stdout, r.stdout + r.stderr
    r = _cli("validate", str(exported), "--runtimes", "onnxruntime,tensorrt", "--data", "synthetic", "--limit", "16",
             "--quiet", cwd=exported.parent)
    assert r.returncode == 0 and "PASS" in r.stdout, r.stdout + r.stderr
    assert (exported.parent / "validation.json").is_file()
    if importlib.util.find_spec("tensorrt") is None:
        r = _cli("compile", str(exported), "--target", "tensorrt", cwd=exported.parent)
        assert r.returncode == 6 and "TensorRT is not installed" in r.stderr and "Traceback" not in r.stderr


def test_training_commands_name_the_missing_extra(exported, tmp_path):
    r = _cli("train-export", "--eval-limit", "8", "--quiet", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert r.returncode == 6, r.stdout + r.stderr
    assert "pip install 'dfq-deploy[train]'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.partial*"))
