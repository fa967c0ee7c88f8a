"""A user's own model, as a new user runs it: torchvision classifiers at their own input size, evaluation data of
the user's choice, and models the quantizer cannot take refused before any work."""

import json

import pytest
import torch
from click.testing import CliRunner

from dfq_deploy.cli import main

TINY = ["--set", "calib_batches=1", "--set", "batch_size=16", "--set", "zeroq_steps=5", "--set", "recon_iters=3",
        "--quiet"]


def write_torchvision_card(folder, name, size, card_size=None, **kwargs):
    """``torchvision:name`` with random weights and BatchNorm statistics of noise images (so that the BatchNorm
    folded into each convolution is not the identity), saved as safetensors with its card."""
    from safetensors.torch import save_file

    from dfq_deploy.models import ModelCard, build_model

    torch.manual_seed(0)
    kwargs = {"num_classes": 10, **kwargs}
    model = build_model(f"torchvision:{name}", **kwargs)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(2):
            model(torch.randn(16, 3, size, size, generator=torch.Generator().manual_seed(i)))
    save_file({k: v.contiguous() for k, v in model.eval().state_dict().items()}, str(folder / f"{name}.safetensors"))
    card_size = card_size or size
    card = ModelCard(arch=f"torchvision:{name}", arch_kwargs=kwargs, input_shape=(3, card_size, card_size),
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                     class_names=tuple(f"class{i}" for i in range(10)), weights=f"{name}.safetensors")
    (folder / f"{name}.json").write_text(card.to_json())
    return folder / f"{name}.json"


def _run(args):
    return CliRunner().invoke(main, ["train-export", *args])


def test_synthetic_evaluation_at_the_cards_size_checks_parity_and_says_accuracy_was_not_measured(tmp_path):
    card = write_torchvision_card(tmp_path, "mobilenet_v3_small", 32)
    r = _run(["--teacher", str(card), "--eval-data", "synthetic", "--eval-limit", "128", "--out",
              str(tmp_path / "run"), *TINY])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["eval"] == {"name": "synthetic[128]", "samples": 128, "labelled": False, "input_shape": [3, 32, 32]}
    assert report["teacher"]["accuracy"] is None and report["parity"]["accuracy"] is None
    assert report["gate"]["passed"] and report["census"]["float_compute"] == []
    assert "accuracy was not measured" in r.output and "not measured" in r.output


def test_image_folder_is_resized_and_centre_cropped_to_the_cards_size(tmp_path):
    from PIL import Image

    from dfq_deploy.data.eval_set import _resize_crop

    rng = torch.Generator().manual_seed(0)
    for c in range(10):
        (tmp_path / "images" / f"class{c}").mkdir(parents=True)
        for i in range(3):
            pixels = torch.randint(0, 256, (36, 44, 3), generator=rng, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "images" / f"class{c}" / f"{i}.png")
    assert _resize_crop(Image.new("RGB", (44, 36)), 32, 32).size == (32, 32)
    same = Image.new("RGB", (32, 32), (1, 2, 3))
    assert _resize_crop(same, 32, 32) is same  # the model's own size is kept as it is
    card = write_torchvision_card(tmp_path, "mobilenet_v3_small", 32)
    r = _run(["--teacher", str(card), "--eval-data", f"imagefolder:{tmp_path / 'images'}", "--out",
              str(tmp_path / "run"), *TINY])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["eval"]["labelled"] and report["eval"]["samples"] == 30
    assert isinstance(report["teacher"]["accuracy"], float) and isinstance(report["parity"]["accuracy"], float)


def test_fashion_mnist_for_a_colour_model_names_the_options(tmp_path):
    card = write_torchvision_card(tmp_path, "mobilenet_v3_small", 32)
    r = _run(["--teacher", str(card), "--dry-run", "--eval-limit", "10"])
    assert r.exit_code == 2 and "--eval-data imagefolder:PATH" in r.output and "synthetic" in r.output


def test_a_model_that_cannot_run_at_its_cards_size_is_refused_before_any_work(tmp_path):
    # its pooling shrinks 16x16 below the kernel
    card = write_torchvision_card(tmp_path, "densenet121", 64, card_size=16)
    out = tmp_path / "run"
    r = _run(["--teacher", str(card), "--eval-data", "synthetic", "--out", str(out), *TINY])
    assert r.exit_code == 4, r.output
    assert "does not run on its card's input_shape [3, 16, 16]" in r.output and "fix:" in r.output
    assert not out.exists() and "Traceback" not in r.output


def test_a_teacher_without_batchnorm_calibrates_on_noise_or_is_refused_by_recipes_that_need_it(tmp_path):
    card = write_torchvision_card(tmp_path, "squeezenet1_1", 64)
    r = _run(["--teacher", str(card), "--recipe", "dmkd", "--eval-data", "synthetic", "--dry-run"])
    assert r.exit_code == 4 and "no BatchNorm layer" in r.output and "--recipe ptq" in r.output
    r = _run(["--teacher", str(card), "--eval-data", "synthetic", "--eval-limit", "128", "--out",
              str(tmp_path / "run"), *TINY])
    assert r.exit_code == 0, r.output
    assert "source: noise" in (tmp_path / "run" / "recipe.yaml").read_text()


def test_a_vision_transformer_is_refused_before_any_work(tmp_path):
    card = write_torchvision_card(tmp_path, "vit_b_32", 32, image_size=32)
    r = _run(["--teacher", str(card), "--eval-data", "synthetic", "--dry-run"])
    assert r.exit_code == 4, r.output
    assert "multiplies activations" in r.output and "Traceback" not in r.output


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5", "googlenet"])
def test_edge_families_pass_the_gate_with_every_conv_integer(tmp_path, name):
    """One model of each family that failed before (Hardswish, SiLU and squeeze-excitation; channel split; Inception
    concatenations), end to end at 64x64 with tiny settings: every activation passes the layer-local check, ONNX
    Runtime runs every Conv/Gemm as an integer kernel, and end to end the gate passes (random weights fed noise
    give nearly tied logits: where the reference's own top-1 moves with float64 rounding, the gate holds the
    runtime to that, and says so)."""
    extra = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    card = write_torchvision_card(tmp_path, name, 64, **extra)
    r = _run(["--teacher", str(card), "--eval-data", "synthetic", "--eval-limit", "256", "--out",
              str(tmp_path / "run"), *TINY])
    validation = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert r.exit_code == 0, (r.output, validation["failures"])
    assert validation["layers"]["passed"]  # every activation within a rounding tie
    assert validation["census"]["all_integer"] and validation["census"]["integer_compute"] > 20
    row = validation["runtimes"]["onnxruntime"]
    if validation["float64_agreement"] is not None:  # measured only where the fixed thresholds were not met
        assert row["rounding_baseline"] == validation["float64_agreement"] < validation["gate"]["min_agreement"]
        assert "float64 evaluation" in r.output
