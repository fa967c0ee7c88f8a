"""Several processes with torch.distributed: a 2-process gloo run on the CPU trains one student (identical weights in
every process), writes one run directory, and every process ends with the same exit code."""

import json
import os
import subprocess
import sys

import pytest
import torch

from dfq_deploy import distributed

from .conftest import make_tiny_teacher, write_tiny_card


def test_single_process_helpers_are_identity():
    assert distributed.current() is None and distributed.rank() == 0 and distributed.rank_seed(7) == 7
    assert list(distributed.my_share(3)) == [0, 1, 2]
    batches = [torch.ones(2, 1), torch.zeros(2, 1)]
    assert distributed.gather_batches(batches, 2) is batches
    assert distributed.any_true(False) is False and distributed.broadcast_object("x") == "x"
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    distributed.average_gradients([p])
    assert torch.equal(p.grad, torch.full((3,), 2.0))


def _run(tmp_path, *args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dfq_deploy", "train-export", *args], capture_output=True, text=True,
                          env=env, timeout=900, cwd=tmp_path)


@pytest.mark.parametrize("recipe,args", [
    ("gdfq", ["--steps", "6", "--warmup-steps", "4", "--set", "calib_batches=3", "--set", "calib_steps=3",
              "--set", "recon_iters=2"]),
    ("ptq", ["--set", "calib_batches=3", "--set", "zeroq_steps=3", "--set", "recon_iters=3"]),
])
def test_two_gloo_processes_train_one_student(tmp_path, recipe, args):
    card = write_tiny_card(tmp_path, make_tiny_teacher())
    r = _run(tmp_path, "--teacher", str(card), "--recipe", recipe, *args, "--batch-size", "16", "--eval-limit",
             "100", "--device", "cpu", "--quiet", "--nproc", "2", "--out", "run")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    d = report["distributed"]
    assert d["world_size"] == 2 and d["backend"] == "gloo"
    assert len(d["student_sha256_per_rank"]) == 2 and d["identical_on_every_rank"]
    assert report["gate"]["passed"]
    # one run directory, nothing else written beside it; the summary printed once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tiny.json", "tiny.safetensors"]
    assert r.stdout.count("run directory:") == 1
    if recipe == "ptq":  # ZeroQ batches were split between the processes and gathered: all three calibrate
        assert len([h for h in report["history"] if h["phase"] == "inversion"]) >= 1


def test_user_error_under_nproc_is_one_line_before_any_process_starts(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("x")
    card = write_tiny_card(tmp_path, make_tiny_teacher())
    r = _run(tmp_path, "--teacher", str(card), "--nproc", "2", "--out", "run", "--quiet")
    assert r.returncode == 2 and r.stderr.count("error:") == 1 and "already exists" in r.stderr
    assert "Traceback" not in r.stderr and "torch.distributed" not in r.stderr
    r = _run(tmp_path, "--nproc", "0", "--quiet")
    assert r.returncode == 2 and "--nproc" in r.stderr


def test_resume_is_refused_under_several_processes(tmp_path):
    r = _run(tmp_path, "--resume", "somewhere", "--nproc", "2")
    assert r.returncode == 2 and "one process" in r.stderr
