import json

import pytest
from click.testing import CliRunner

from dfq_deploy import __version__
from dfq_deploy.cli import main
from dfq_deploy.pipeline import TrainExportConfig
from dfq_deploy.recipes import DEFAULT_RECIPE


@pytest.fixture
def runner():
    return CliRunner()


def test_help_and_version(runner):
    r = runner.invoke(main, ["--help"])
    assert r.exit_code == 0 and "train-export" in r.output and "pretrain" in r.output
    assert __version__ in runner.invoke(main, ["--version"]).output


@pytest.mark.no_tensorrt
def test_tensorrt_target_without_tensorrt_exports_checks_and_says_so(runner, tmp_path, tiny_card):
    import json

    from dfq_deploy.export import check_tensorrt_rules

    run = tmp_path / "run"
    r = runner.invoke(main, ["train-export", "--target", "tensorrt", "--teacher", str(tiny_card), "--recipe", "ptq",
                             "--set", "source=noise", "--bits", "W8A8", "--eval-limit", "200", "--quiet",
                             "--out", str(run)])
    assert r.exit_code == 0, r.output
    assert "TensorRT Q/DQ rules       pass" in r.output and "not built: TensorRT is not installed" in r.output
    report = json.loads((run / "report.json").read_text())
    assert report["scheme"]["trt_compatible"] is True and report["export"]["profile"] == "tensorrt"
    assert report["parity"]["runtime"] == "onnxruntime (tensorrt profile)" and report["gate"]["passed"]
    # every quantized layer of the student (resnet8: 9 conv + fc) is one TensorRT runs in int8
    assert len(check_tensorrt_rules(str(run / "model.onnx")).quantized_compute) == 10

    # the same run, exported for ONNX Runtime: every Conv/Gemm integer
    r = runner.invoke(main, ["export", str(run), "--profile", "onnxruntime"])
    assert r.exit_code == 0, r.output
    assert (run / "model.onnxruntime.onnx").is_file() and "ALL INTEGER" in r.output
    r = runner.invoke(main, ["inspect", str(run / "model.onnxruntime.onnx"), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["ok"] and info["metadata"]["dfq_deploy.profile"] == "onnxruntime"
    assert info["metadata"]["dfq_deploy.recipe"] == "ptq" and len(info["layer_bits"]) == 10  # resnet8: 9 conv + fc
    # an onnxruntime-profile graph breaks TensorRT's rules: exit 5 and the rules named
    r = runner.invoke(main, ["inspect", str(run / "model.onnxruntime.onnx"), "--runtime", "tensorrt"])
    assert r.exit_code == 5 and "[int32-bias]" in r.output and "Traceback" not in r.output


def test_export_and_inspect_user_errors(runner, tmp_path):
    r = runner.invoke(main, ["export", str(tmp_path), "--profile", "tensorrt"])
    assert r.exit_code == 2 and "not a dfq-deploy run directory" in r.output
    r = runner.invoke(main, ["inspect", str(tmp_path / "missing.onnx")])
    assert r.exit_code == 4 and "not found" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("args,code,text", [
    (["--bits", "W9A4"], 2, "out of range"),
    (["--bits", "banana"], 2, "cannot read bit widths"),
    (["--set", "no_such_key=1"], 2, "unknown key"),
    (["--set", "recon_iters=many"], 2, "must be a number"),
    (["--steps", "5"], 2, "--steps does not apply to recipe ptq"),
    (["--recipe", "dmkd", "--set", "steps=many"], 2, "must be a number"),
    (["--set", "oops"], 2, "KEY=VALUE"),
    (["--recipe", "magic"], 2, "unknown recipe"),
    (["--teacher", "/nonexistent/card.json"], 4, "not found"),
])
def test_user_errors_exit_with_documented_codes(runner, tmp_path, args, code, text):
    r = runner.invoke(main, ["train-export", "--quiet", "--out", str(tmp_path / "run"), *args])
    assert r.exit_code == code, r.output
    assert text in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_recipe_yaml_errors(runner, tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("recipe: dmkd\nstepz: 3\n")
    r = runner.invoke(main, ["train-export", "--config", str(bad), "--out", str(tmp_path / "run"), "--quiet"])
    assert r.exit_code == 2 and "unknown key(s) stepz" in r.output
    r = runner.invoke(main, ["train-export", "--config", str(bad), "--recipe", "gdfq", "--quiet"])
    assert r.exit_code == 2 and "contradicts" in r.output
    bad.write_text("- just\n- a list\n")
    r = runner.invoke(main, ["train-export", "--config", str(bad), "--quiet"])
    assert r.exit_code == 2 and "mapping" in r.output


def test_dmkd_from_yaml_on_a_tiny_teacher(runner, tmp_path, tiny_card):
    cfg = tmp_path / "dmkd.yaml"
    cfg.write_text("recipe: dmkd\nsteps: 3\nwarmup_steps: 2\nbatch_size: 16\nteacher_bits: [W8A8]\n")
    out = tmp_path / "run"
    r = runner.invoke(main, ["train-export", "--teacher", str(tiny_card), "--config", str(cfg), "--eval-limit", "100",
                             "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"] == "dmkd" and report["recipe_config"]["teacher_bits"] == ["W8A8"]
    assert "w_w8a8" in report["history"][-1]
    assert "teacher_bits:\n- W8A8" in (out / "recipe.yaml").read_text()


def test_existing_run_dir_is_refused(runner, tmp_path, tiny_card):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = runner.invoke(main, ["train-export", "--teacher", str(tiny_card), "--out", str(out), "--quiet"])
    assert r.exit_code == 2 and "already exists" in r.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_train_export_on_a_tiny_teacher(runner, tmp_path, tiny_card):
    """The default recipe (ZeroQ calibration + block reconstruction) at a tiny budget."""
    out = tmp_path / "run"
    r = runner.invoke(main, ["train-export", "--teacher", str(tiny_card), "--set", "zeroq_steps=3", "--set",
                             "calib_batches=1", "--set", "recon_iters=3", "--batch-size", "16", "--eval-limit", "200",
                             "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"] == DEFAULT_RECIPE == TrainExportConfig().recipe == "ptq"
    assert report["recipe_config"]["source"] == "zeroq"
    assert [h for h in report["history"] if h["phase"] == "reconstruction"]
    assert report["census"]["all_integer"] and report["gate"]["passed"]
    assert report["eval"]["samples"] == 200
    assert "integer kernels" in r.output and "student W4A4 onnxruntime" in r.output
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "report.json", "summary.txt", "train.log",
                                               "losses.png", "student.safetensors"}
    assert not list(tmp_path.glob(".run.partial*"))


def test_the_full_weight_grid_is_trained_exported_gated_and_reloaded(runner, tmp_path, tiny_card):
    """``--weight-grid full``: the scheme records it, the run is gated like any other, and the student rebuilt from
    the run directory (export, validate) has the lowest code in its inner layers."""
    import torch

    from dfq_deploy.rundir import load_run

    out = tmp_path / "run"
    r = runner.invoke(main, ["train-export", "--teacher", str(tiny_card), "--bits", "W3A3", "--weight-grid", "full",
                             "--set", "zeroq_steps=3", "--set", "calib_batches=1", "--set", "recon_iters=3",
                             "--batch-size", "16", "--eval-limit", "100", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["scheme"]["weight_grid"] == "full" and report["gate"]["passed"]
    assert "scheme=W3A3 weight_grid=full" in r.output
    student, _, _ = load_run(out)
    layers = [m for m in student.modules() if hasattr(m, "quant_weight")][1:-1]
    lowest = [int(torch.round(m.quant_weight().value / m.quant_weight().scale).min()) for m in layers]
    assert min(lowest) == -4 and max(lowest) >= -4


# ids that do not say "tensorrt": the conftest skips those without TensorRT, and this one needs only its profile
@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"], ids=["ort-profile", "trt-profile"])
def test_train_export_on_the_shipped_mobilenet_by_name(runner, tmp_path, target):
    """The second shipped teacher (depthwise-separable blocks, ReLU6, residual adds) through the main job in both
    export profiles, picked by its name: every convolution integer, the gate passes."""
    out = tmp_path / "run"
    r = runner.invoke(main, ["train-export", "--teacher", "mobilenetv2_fmnist", "--target", target, "--set",
                             "zeroq_steps=3", "--set", "calib_batches=1", "--set", "recon_iters=3", "--batch-size",
                             "16", "--eval-limit", "200", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["card"].endswith("mobilenetv2_fmnist.json") and report["target"] == target
    if target == "onnxruntime":
        assert report["census"]["all_integer"] and report["census"]["integer_compute"] == 35
    else:  # TensorRT's own Q/DQ rules: every convolution and the classifier quantized
        assert report["tensorrt"]["rule_check"]["ok"] and report["tensorrt"]["rule_check"]["quantized_compute"] == 35
    assert report["gate"]["passed"]


@pytest.mark.parametrize("recipe,args", [
    ("dfqf", ["--steps", "3", "--warmup-steps", "2", "--batch-size", "16"]),
    ("adversarial", ["--steps", "3", "--warmup-steps", "2", "--batch-size", "16", "--set", "students=2",
                     "--set", "generators=2"]),
    ("lis", ["--steps", "3", "--batch-size", "16", "--set", "num_images=20", "--set", "inversion_steps=3",
             "--set", "inversion_batch=10"]),
    ("ptq", ["--set", "source=noise", "--set", "recon_iters=3", "--batch-size", "16"]),
])
def test_every_recipe_runs_end_to_end(runner, tmp_path, tiny_card, recipe, args):
    out = tmp_path / "run"
    r = runner.invoke(main, ["train-export", "--teacher", str(tiny_card), "--recipe", recipe, *args,
                             "--eval-limit", "100", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"] == recipe and report["census"]["all_integer"]
    assert report["gate"]["passed"] and report["gate"]["layers"]["passed"]
    assert (out / "losses.png").stat().st_size > 0
    if recipe == "lis":  # the synthetic set is kept with the run, listed, and reusable
        assert "synthetic_set.safetensors" in report["files"]
        # inverted pixels are kept in the teacher's real input range, taken from its model card
        assert report["recipe_config"]["pixel_mean"] == [0.2860] and report["recipe_config"]["pixel_std"] == [0.3530]
        again = tmp_path / "again"
        r2 = runner.invoke(main, ["train-export", "--teacher", str(tiny_card), "--recipe", "lis", "--steps", "2",
                                  "--batch-size", "16", "--set", f"synthetic_set={out / 'synthetic_set.safetensors'}",
                                  "--bits", "W8A8", "--eval-limit", "100", "--out", str(again), "--quiet"])
        assert r2.exit_code == 0, r2.output
        hist = json.loads((again / "report.json").read_text())["history"]
        assert not [h for h in hist if h["phase"] == "inversion"]


def test_recipe_option_of_another_recipe_is_rejected(runner, tmp_path, tiny_card):
    r = runner.invoke(main, ["train-export", "--teacher", str(tiny_card), "--recipe", "lis", "--warmup-steps", "5",
                             "--out", str(tmp_path / "run"), "--quiet"])
    assert r.exit_code == 2 and "warmup_steps" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_an_unexpected_exception_is_reported_as_a_bug_with_its_traceback_saved(runner, tmp_path, monkeypatch):
    import re

    import dfq_deploy.pipeline as pipeline

    def boom(cfg):
        raise ValueError("an internal invariant broke\nsecond line")

    monkeypatch.setattr(pipeline, "train_export", boom)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    r = runner.invoke(main, ["train-export", "--quiet", "--out", str(tmp_path / "run")])
    assert r.exit_code == 1
    assert "internal error: ValueError: an internal invariant broke" in r.output and "second line" not in r.output
    assert "bug in dfq-deploy" in r.output and "Traceback" not in r.output
    saved = re.search(r"traceback is in (\S+)", r.output).group(1)
    text = open(saved).read()
    assert "Traceback (most recent call last)" in text and "an internal invariant broke" in text


@pytest.mark.parametrize("error", [RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                                                  "allocate memory: you tried to allocate 99999999999 bytes"),
                                   "cuda"])
def test_out_of_memory_in_training_is_a_typed_error_and_leaves_nothing(runner, tmp_path, tiny_card, monkeypatch,
                                                                        error):
    import torch

    import dfq_deploy.recipes as recipes

    if error == "cuda":
        error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    cls, _ = recipes.RECIPES["ptq"]

    def runs_out(*args, **kwargs):
        raise error

    monkeypatch.setitem(recipes.RECIPES, "ptq", (cls, runs_out))
    r = runner.invoke(main, ["train-export", "--teacher", str(tiny_card), "--eval-limit", "20", "--quiet",
                             "--out", str(tmp_path / "run")])
    assert r.exit_code == 8, r.output
    assert "out of memory while training" in r.output and "lower --batch-size" in r.output
    assert "Traceback" not in r.output and "internal error" not in r.output
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.partial*"))


@pytest.mark.parametrize("args,text", [
    (["--threads", "-1"], "threads=-1"), (["--threads", "0"], "threads=0"), (["--eval-limit", "0"], "eval_limit=0"),
    (["--seed", "99999999999999999999"], "seed="), (["--seed", "-3"], "seed=-3"),
    (["--set", "seed=1e30"], "seed="), (["--checkpoint-every", "-2"], "checkpoint_every=-2"),
])
def test_out_of_range_run_options_fail_before_any_work(runner, tmp_path, args, text):
    r = runner.invoke(main, ["train-export", "--quiet", "--out", str(tmp_path / "run"), *args])
    assert r.exit_code == 2 and text in r.output and "fix:" in r.output and "Traceback" not in r.output
    assert not list(tmp_path.iterdir())


def test_same_seed_config_and_threads_give_byte_identical_files(runner, tmp_path, tiny_card):
    """The thread count is part of the recipe for bytes: torch's CPU reductions split their work by thread, so
    --threads 1 and --threads 2 give students a few last bits apart (docs/scale.md)."""
    args = ["train-export", "--teacher", str(tiny_card), "--batch-size", "16", "--set", "calib_batches=2", "--set",
            "zeroq_steps=3", "--set", "recon_iters=4", "--eval-limit", "50", "--threads", "1", "--device", "cpu",
            "--quiet"]
    for out in ("a", "b"):
        r = runner.invoke(main, [*args, "--out", str(tmp_path / out)])
        assert r.exit_code == 0, r.output
    for name in ("model.onnx", "student.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_the_recon_section_from_yaml_set_and_old_flat_keys(runner, tmp_path, tiny_card):
    import yaml

    f = tmp_path / "r.yaml"
    f.write_text("recipe: ptq\nrecon: {batch: 16}\n")
    r = runner.invoke(main, ["train-export", "--teacher", str(tiny_card), "--config", str(f), "--set",
                             "recon.iters=7", "--set", "recon_qdrop=0.25", "--dry-run", "--eval-limit", "20",
                             "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    recipe = yaml.safe_load(r.output.split("\n", 1)[1])
    assert "recon_iters" not in recipe  # written in the nested form
    assert recipe["recon"] == {"iters": 7, "batch": 16, "qdrop": 0.25, "round_lr": 0.01, "scale_lr": 0.01,
                               "round_weight": 0.01, "augment": 1}  # the rest: ptq's defaults


def test_recipe_help_lists_the_registry(runner):
    from dfq_deploy.recipes import RECIPES

    r = runner.invoke(main, ["train-export", "--help"])
    text = "".join(r.output.split())  # click wraps the help, also at hyphens

    def squeezed(s):
        return "".join(s.split())

    assert r.exit_code == 0 and squeezed(f"ptq (default): {RECIPES['ptq'].summary}") in text
    assert all(squeezed(f"{name}: {entry.summary}") in text for name, entry in RECIPES.items() if name != "ptq")


def test_a_run_logged_to_a_file_stays_a_readable_size(tmp_path):
    """What every CI does (`make demo > demo.log 2>&1`): without a terminal the progress bars redraw at most every
    30 s, so a run's log holds a few lines per stage, not every update of every bar."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    exe = str(Path(sys.executable).parent / "dfq-deploy")
    proc = subprocess.run([exe, "train-export", "--set", "zeroq_steps=60", "--set", "calib_batches=2", "--set",
                           "recon.iters=40", "--batch-size", "16", "--eval-limit", "2000", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    updates = proc.stderr.replace("\r", "\n").splitlines()
    # every stage says it started (a bar at 0 %) and ended (100 %, with its time): ZeroQ, reconstruction, the
    # evaluations, the layer-local check
    for stage in ("ZeroQ inversion", "block reconstruction", "evaluate torch", "evaluate onnxruntime",
                  "layer-local parity"):
        assert any(line.startswith(stage) and " 0%" in line for line in updates), stage
        assert any(line.startswith(stage) and "100%" in line for line in updates), stage
    # at a terminal's redraw rate this run prints well over a hundred updates
    assert len(updates) < 60 and len(proc.stderr) < 4000, (len(updates), len(proc.stderr))


def test_a_pretraining_logged_to_a_file_does_not_print_every_loss(tmp_path):
    """A bar's loss read-out waits for the bar's next redraw instead of forcing one each step: without a terminal a
    pretraining of 256 steps prints a few lines, not 256."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    exe = str(Path(sys.executable).parent / "dfq-deploy")
    proc = subprocess.run([exe, "pretrain", "--out", str(tmp_path / "t.json"), "--arch", "resnet8", "--width", "4",
                           "--epochs", "1", "--limit", "4096", "--batch-size", "16", "--device", "cpu"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    updates = proc.stderr.replace("\r", "\n").splitlines()
    assert any(line.startswith("pretrain epoch 1/1") and "100%" in line for line in updates)
    assert len(updates) < 20, (len(updates), proc.stderr[-1000:])


def test_pretrain_prints_the_card_it_wrote(runner, tmp_path):
    """``--out t/teacher.txt`` writes ``t/teacher.json`` (and its weights): the line printed names that file."""
    r = runner.invoke(main, ["pretrain", "--out", str(tmp_path / "t" / "teacher.txt"), "--arch", "resnet8",
                             "--width", "4", "--epochs", "1", "--limit", "256"])
    assert r.exit_code == 0, r.output
    card = tmp_path / "t" / "teacher.json"
    assert card.is_file() and r.output.strip().endswith(f"-> {card}")
