"""Checkpoints and ``--resume``: a run stopped anywhere and resumed ends bit-identical to an uninterrupted one; run
directories are locked, and interrupted runs are named, never silently piled up."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from dfq_deploy.checkpoint import CHECKPOINT, Checkpointer, RunInterrupted
from dfq_deploy.cli import main
from dfq_deploy.config import config_from_dict
from dfq_deploy.errors import ConfigError
from dfq_deploy.quant import QuantScheme, quantize_model
from dfq_deploy.recipes import RECIPES
from dfq_deploy.rundir import create_run_dir, partial_path

from .conftest import make_tiny_teacher, write_tiny_card

# tiny budgets that still pass through every stage of each recipe
TINY = {
    "ptq": dict(calib_batches=2, batch_size=16, zeroq_steps=4, recon_iters=4, recon_batch=8),
    "dmkd": dict(steps=6, warmup_steps=4, batch_size=16, calib_batches=2, calib_steps=3, recon_iters=3,
                 recon_batch=8),
    "adversarial": dict(steps=6, warmup_steps=4, batch_size=16, calib_batches=2, calib_steps=3, students=2),
    "lis": dict(num_images=40, inversion_batch=16, inversion_steps=3, steps=6, batch_size=16, calib_batches=2,
                recon_iters=3, recon_batch=8),
}


class _StopAt(Checkpointer):
    """Acts as if SIGTERM arrived right after the ``n``-th checkpoint was written."""

    def __init__(self, folder, n):
        super().__init__(folder, every=2)
        self.n = n

    def save(self, stage, state):
        super().save(stage, state)
        if self.saves == self.n:
            self.stop_signal = signal.SIGTERM


def _train(recipe, checkpoint=None):
    cls, fn = RECIPES[recipe]
    cfg = config_from_dict(cls, TINY[recipe], where=recipe)
    teacher = make_tiny_teacher()
    student = quantize_model(teacher, QuantScheme.from_tag("W4A4"))
    history = fn(teacher, student, cfg, (1, 28, 28), 10, progress=False, checkpoint=checkpoint)
    return student.state_dict(), history


class _Record(Checkpointer):
    """Writes nothing; records which stage each checkpoint belongs to."""

    def __init__(self):
        super().__init__(None, every=2)
        self.stages = []

    def save(self, stage, state):
        super().save(stage, state)
        self.stages.append(stage)


@pytest.mark.parametrize("recipe", list(TINY))
def test_a_run_stopped_in_every_stage_resumes_bit_identical(recipe, tmp_path):
    rec = _Record()
    ref, ref_history = _train(recipe, rec)
    # stop after the first checkpoint of every stage, one in the middle of the last stage, and the very last one
    points = sorted({rec.stages.index(st) + 1 for st in rec.stages} | {len(rec.stages) - 1, len(rec.stages)})
    for n in points:
        folder = tmp_path / f"stop{n}"
        folder.mkdir()
        with pytest.raises(RunInterrupted) as e:
            _train(recipe, _StopAt(folder, n))
        assert e.value.exit_code == 128 + signal.SIGTERM and "checkpoint saved" in str(e.value)
        ck = Checkpointer.load(folder)
        assert list(ck.sections)[-1] == rec.stages[n - 1]
        state, history = _train(recipe, ck)
        assert state.keys() == ref.keys()
        different = [k for k in ref if not torch.equal(ref[k], state[k])]
        assert not different, f"resumed after checkpoint {n} ({ck.describe()}): {different[:3]} differ"
        assert history == ref_history
    expected = {"ptq": ["zeroq", "reconstruction"], "dmkd": ["zeroq", "warmup", "reconstruction", "kd"],
                "adversarial": ["zeroq", "warmup", "kd"],
                "lis": ["inversion_float", "inversion_courses", "reconstruction", "kd"]}[recipe]
    assert list(dict.fromkeys(rec.stages)) == expected


def test_unreadable_checkpoint_is_a_config_error(tmp_path):
    (tmp_path / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        Checkpointer.load(tmp_path)
    torch.save({"format": 99, "sections": {}}, tmp_path / CHECKPOINT)
    with pytest.raises(ConfigError, match="format"):
        Checkpointer.load(tmp_path)


def test_checkpoint_is_read_without_unpickling(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"format": 1, "sections": {"x": Evil()}}, tmp_path / CHECKPOINT)
    with pytest.raises(ConfigError):
        Checkpointer.load(tmp_path)
    assert not (tmp_path / "pwned").exists()


# -- the run directory and the CLI ---------------------------------------------------------------------------------

@pytest.fixture
def runner():
    return CliRunner()


TINY_CLI = ["--recipe", "gdfq", "--steps", "24", "--warmup-steps", "6", "--batch-size", "16", "--set",
            "calib_batches=1", "--set", "calib_steps=3", "--eval-limit", "100", "--threads", "1", "--quiet"]


def test_second_run_on_the_same_out_fails_at_once(runner, tmp_path, tiny_card):
    out = tmp_path / "run"
    holder = create_run_dir(out, "gdfq", "W4A4")  # a live run holds the folder's lock
    try:
        t = time.time()
        r = runner.invoke(main, ["train-export", "--teacher", str(tiny_card), *TINY_CLI, "--out", str(out)])
        assert r.exit_code == 2 and "another dfq-deploy run" in r.output and str(os.getpid()) in r.output
        assert time.time() - t < 30  # refused before training
        r = runner.invoke(main, ["train-export", "--resume", str(out)])
        assert r.exit_code == 2 and "still being trained" in r.output
    finally:
        holder.discard()
    assert not out.exists() and not partial_path(out).exists()


def test_resume_errors_name_the_problem(runner, tmp_path, tiny_card):
    r = runner.invoke(main, ["train-export", "--resume", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no interrupted run" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["train-export", "--resume", str(tmp_path / "x"), "--bits", "W8A8"])
    assert r.exit_code == 2 and "--bits" in r.output and "settings it started with" in r.output
    done = tmp_path / "done"
    done.mkdir()
    (done / "report.json").write_text("{}")
    r = runner.invoke(main, ["train-export", "--resume", str(done)])
    assert r.exit_code == 2 and "finished run" in r.output


def test_partial_folder_without_checkpoint_is_cleaned_and_with_one_is_named(runner, tmp_path, tiny_card):
    out = tmp_path / "run"
    stale = partial_path(out)
    stale.mkdir()
    (stale / "train.log").write_text("killed before its first checkpoint")
    old_style = tmp_path / ".older.partial-999999999"  # a pre-checkpoint version's folder, its process gone
    old_style.mkdir()
    r = runner.invoke(main, ["train-export", "--teacher", str(tiny_card), *TINY_CLI, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert not stale.exists() and not old_style.exists() and (out / "report.json").is_file()
    # a stale folder with a checkpoint is a run to resume: a new run aimed at it says how, and does not touch it
    other = tmp_path / "other"
    p = partial_path(other)
    p.mkdir()
    (p / "run.json").write_text("{}")
    torch.save({"format": 1, "sections": {}}, p / CHECKPOINT)
    r = runner.invoke(main, ["train-export", "--teacher", str(tiny_card), *TINY_CLI, "--out", str(other)])
    assert r.exit_code == 2 and f"--resume {other}" in r.output
    assert (p / CHECKPOINT).exists()


def _cli(*args):
    return [sys.executable, "-m", "dfq_deploy", "train-export", *args]


def _checkpoint_step(partial: Path) -> tuple[str, int] | None:
    try:
        data = torch.load(partial / CHECKPOINT, weights_only=True)
    except Exception:  # noqa: BLE001 - not there yet
        return None
    stage, state = list(data["sections"].items())[-1]
    return stage, state.get("step", 0)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_bit_identical_files(tmp_path, sig):
    """On the CPU (on CUDA, two uninterrupted runs of one seed already differ in the last bits: docs/scale.md)."""
    card = write_tiny_card(tmp_path, make_tiny_teacher())
    args = ["--teacher", str(card), *TINY_CLI, "--checkpoint-every", "4", "--device", "cpu"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    ref = subprocess.run(_cli(*args, "--out", str(tmp_path / "ref")), capture_output=True, text=True, env=env,
                         timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]

    seed = random.randrange(1 << 16)
    rnd = random.Random(seed)
    target = rnd.randrange(4, 20)  # a random KD step past the first checkpoint, before the end
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*args, "--out", str(out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    seen = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        seen = _checkpoint_step(partial_path(out))
        if seen and seen[0] == "kd" and seen[1] >= target:
            time.sleep(rnd.uniform(0, 0.3))
            proc.send_signal(sig)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=120)
    assert seen and seen[0] == "kd", f"never reached KD step {target} (seed {seed}): {err[-2000:]}"
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
        assert "stopped by SIGTERM" in err and f"--resume {out}" in err and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and partial_path(out).is_dir()
    stopped_at = _checkpoint_step(partial_path(out))
    assert stopped_at[1] >= seen[1]  # at most one checkpoint interval is lost

    resumed = subprocess.run(_cli("--resume", str(out), "--quiet"), capture_output=True, text=True, env=env,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not partial_path(out).exists() and not (out / CHECKPOINT).exists() and not (out / "run.json").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["checkpoint"]["resumed_from"] == f"kd step {stopped_at[1]}"
    for name in ("student.safetensors", "model.onnx"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), \
            f"{name} differs after {signal.Signals(sig).name} at KD step {seen[1]} (seed {seed})"
    # the committed run is readable like any other tool's output (the user's umask, not private temp-file modes)
    mask = os.umask(0o022)
    os.umask(mask)
    assert (out / "model.onnx").stat().st_mode & 0o777 == 0o666 & ~mask
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask


def test_resume_refuses_a_teacher_whose_weights_changed(runner, tmp_path, tiny_card):
    """run.json records the teacher weights' sha256; a resume against other weights would finish a student trained
    against two teachers, so it is refused (exit 4) naming both hashes. Unchanged weights resume."""
    from dfq_deploy.files import file_sha256
    from dfq_deploy.pipeline import TrainExportConfig
    from dfq_deploy.pipeline.run import _run_record
    from dfq_deploy.pipeline.resolve import resolve
    from dfq_deploy.rundir import write_run_config

    out = tmp_path / "run"
    cfg = TrainExportConfig(teacher=str(tiny_card), eval_limit=16, out=str(out), progress=False,
                            recipe_options={"calib_batches": 1, "batch_size": 16, "zeroq_steps": 2, "recon.iters": 1})
    rd = create_run_dir(cfg.out, cfg.recipe, "w4a4")
    record = _run_record(cfg, resolve(cfg))
    weights = tiny_card.parent / "tiny.safetensors"
    assert record["teacher_sha256"] == file_sha256(weights)
    write_run_config(rd, record)
    torch.save({"format": 1, "sections": {}}, rd.partial / CHECKPOINT)
    rd.release()
    before, original = record["teacher_sha256"], weights.read_bytes()
    teacher = make_tiny_teacher()
    teacher.fc.bias.data += 1  # the user retrained or replaced the teacher meanwhile
    from safetensors.torch import save_file

    save_file(teacher.state_dict(), str(weights))
    r = runner.invoke(main, ["train-export", "--resume", str(out), "--quiet"])
    assert r.exit_code == 4 and "changed since the run started" in r.output, r.output
    assert before[:16] in r.output and file_sha256(weights)[:16] in r.output and "Traceback" not in r.output
    assert (rd.partial / CHECKPOINT).is_file()  # the run is kept for a resume with the right weights
    weights.write_bytes(original)
    r = runner.invoke(main, ["train-export", "--resume", str(out), "--quiet"])
    assert r.exit_code == 0 and (out / "report.json").is_file(), r.output


def test_run_json_with_an_unknown_key_is_a_config_error_with_a_fix():
    from dfq_deploy.pipeline import TrainExportConfig

    saved = {**TrainExportConfig().to_dict(), "evil": 1}
    with pytest.raises(ConfigError, match="unknown key evil") as e:
        TrainExportConfig.from_dict(saved)
    assert e.value.hint
