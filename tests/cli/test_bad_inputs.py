"""The bad-input matrix (issue 13): hostile or mistaken inputs a user can hand the CLI. Each must end in one
`error:` line naming the problem, a `fix:` hint, its documented exit code, no traceback, no `internal error`, and
nothing written under the run's name. docs/errors.md lists every case of MATRIX (a test keeps them in step).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from dfq_deploy.cli import main

from ..conftest import make_tiny_teacher, write_tiny_card

FAST = ["--batch-size", "8", "--set", "calib_batches=1", "--set", "zeroq_steps=1", "--set", "recon_iters=1",
        "--eval-limit", "20", "--quiet"]


@dataclass
class Env:
    tmp: Path    # this case's own folder
    card: Path   # a tiny teacher's model card (shared, read-only)
    run: Path    # a finished train-export run of that teacher (shared, read-only: copy it to change it)

    def te(self, *args: str) -> list[str]:
        return ["train-export", "--teacher", str(self.card), "--quiet", "--out", str(self.tmp / "run"), *args]

    def copy_run(self) -> Path:
        return Path(shutil.copytree(self.run, self.tmp / "copy"))

    def file(self, name: str, data: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def card_with(self, **changes) -> Path:
        """A copy of the tiny card (weights beside it) with ``changes`` to its fields."""
        raw = json.loads(self.card.read_text())
        raw.update(changes)
        shutil.copy(self.card.parent / "tiny.safetensors", self.tmp / "tiny.safetensors")
        return self.file("c.json", json.dumps(raw))

    def card_with_weights(self, state: dict) -> Path:
        from safetensors.torch import save_file

        save_file(state, str(self.tmp / "tiny.safetensors"))
        shutil.copy(self.card, self.tmp / "tiny.json")
        return self.tmp / "tiny.json"

    def teacher_state(self) -> dict:
        from safetensors.torch import load_file

        return load_file(str(self.card.parent / "tiny.safetensors"))

    def onnx_with_meta(self, key: str, value: str) -> Path:
        import onnx

        model = onnx.load(str(self.run / "model.onnx"))
        for p in model.metadata_props:
            if p.key == key:
                p.value = value
        path = self.tmp / "m.onnx"
        onnx.save(model, str(path))
        return path


class _Pickled:  # an arbitrary object: what a weights-only reader must refuse to unpickle
    pass


def _teacher_te(env: Env, card: Path, *args: str) -> list[str]:
    return ["train-export", "--teacher", str(card), "--quiet", "--out", str(env.tmp / "run"), *args]


def _nan_weights(env):
    state = env.teacher_state()
    key = next(k for k, v in state.items() if v.dim() == 4)
    state[key][0, 0, 0, 0] = float("nan")
    return _teacher_te(env, env.card_with_weights(state))


def _inf_bn(env):
    state = env.teacher_state()
    key = next(k for k in state if k.endswith("running_var"))
    state[key][0] = float("inf")
    return _teacher_te(env, env.card_with_weights(state))


def _truncated_weights(env):
    data = (env.card.parent / "tiny.safetensors").read_bytes()
    env.file("tiny.safetensors", data[: len(data) // 2])
    shutil.copy(env.card, env.tmp / "tiny.json")
    return _teacher_te(env, env.tmp / "tiny.json")


def _missing_key(env):
    state = env.teacher_state()
    state.pop(next(k for k, v in state.items() if v.dim() == 4))
    return _teacher_te(env, env.card_with_weights(state))


def _pickled_weights(env):
    torch.save({"w": _Pickled()}, env.tmp / "w.pt")
    return _teacher_te(env, env.card_with(weights="w.pt"))


def _yaml(env, text: str | bytes, *args: str):
    return env.te("--config", str(env.file("r.yaml", text)), *args)


_LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n"
                  for i in range(9)) + "recipe: ptq\n"


def _truncated_student(env):
    run = env.copy_run()
    data = (run / "student.safetensors").read_bytes()
    (run / "student.safetensors").write_bytes(data[: len(data) // 3])
    return ["validate", str(run), "--limit", "20", "--quiet"]


def _garbage_report(env):
    run = env.copy_run()
    (run / "report.json").write_text("{not json")
    return ["validate", str(run), "--limit", "20", "--quiet"]


def _corrupt_image(env):
    env.file("imgs/T-shirt/a.png", b"\x89PNG\r\n\x1a\n not really a png")
    return ["validate", str(env.run), "--data", f"imagefolder:{env.tmp / 'imgs'}", "--quiet"]


def _empty_image_folder(env):
    (env.tmp / "imgs").mkdir()
    return ["validate", str(env.run), "--data", f"imagefolder:{env.tmp / 'imgs'}", "--quiet"]


def _garbage_fmnist(env):
    env.file("fm/t10k-images-idx3-ubyte.gz", b"\x1f\x8b not gzip at all")
    env.file("fm/t10k-labels-idx1-ubyte.gz", b"\x1f\x8b not gzip at all")
    return env.te("--data-root", str(env.tmp / "fm"))


def _newer_ir(env):
    import onnx
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    model.ir_version = onnx.IR_VERSION + 5
    return ["inspect", str(env.file("new.onnx", model.SerializeToString())), "--runtime", "none"]


def _escaping_external_data(env):
    import onnx

    model = onnx.load(str(env.run / "model.onnx"))
    init = model.graph.initializer[0]
    init.data_location = onnx.TensorProto.EXTERNAL
    init.ClearField("raw_data")
    entry = init.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/passwd"
    return ["validate", str(env.file("evil.onnx", model.SerializeToString())), "--quiet"]


def _no_metadata(env):
    import onnx

    model = onnx.load(str(env.run / "model.onnx"))
    del model.metadata_props[:]
    return ["validate", str(env.file("bare.onnx", model.SerializeToString())), "--runtimes", "onnxruntime",
            "--quiet"]


def _no_cuda(env):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    return env.te("--device", "cuda")


def _no_tensorrt(env):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    return ["validate", str(env.run), "--runtimes", "tensorrt", "--limit", "20", "--quiet"]


def _compile_without_tensorrt(env):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    return ["compile", str(env.run / "model.onnx"), "--target", "tensorrt", "--out", str(env.tmp / "m.plan")]


# (id, command builder, exit code, text the message must hold); ids are the rows of docs/errors.md
MATRIX = [
    # --- command-line options and --set values (exit 2, before any work)
    ("set-unclosed-list", lambda e: e.te("--recipe", "dmkd", "--set", "student_lr=[0.1"), 2, "not readable"),
    ("set-negative-momentum", lambda e: e.te("--recipe", "dmkd", "--set", "momentum=-1"), 2,
     "momentum=-1 must be in [0, 1)"),
    ("set-bits-as-numbers", lambda e: e.te("--recipe", "dmkd", "--set", "teacher_bits=[4]"), 2, "list of names"),
    ("set-bits-not-a-list", lambda e: e.te("--recipe", "dmkd", "--set", "teacher_bits=W8A8"), 2, "must be a list"),
    ("set-bad-bit-tag", lambda e: e.te("--recipe", "dmkd", "--set", "teacher_bits=[W9A9]"), 2, "out of range"),
    ("set-nan", lambda e: e.te("--recipe", "dmkd", "--set", "student_lr=.nan"), 2, "finite number"),
    ("set-inf", lambda e: e.te("--recipe", "dmkd", "--set", "student_lr=.inf"), 2, "finite number"),
    ("set-negative-lr", lambda e: e.te("--recipe", "dmkd", "--set", "student_lr=-1"), 2, "must be positive"),
    ("set-not-key-value", lambda e: e.te("--set", "oops"), 2, "KEY=VALUE"),
    ("set-empty-key", lambda e: e.te("--set", "=3"), 2, "has no KEY"),
    ("set-unknown-key", lambda e: e.te("--set", "no_such_key=1"), 2, "unknown key"),
    ("set-mapping-for-number", lambda e: e.te("--set", "recon_iters={a: 1}"), 2, "must be a number"),
    ("set-text-for-number", lambda e: e.te("--set", "recon_iters=many"), 2, "must be a number"),
    ("set-fraction-for-count", lambda e: e.te("--set", "recon_iters=2.5"), 2, "must be an integer"),
    ("set-number-for-text", lambda e: e.te("--set", "source=3"), 2, "must be text"),
    ("set-bad-choice", lambda e: e.te("--set", "source=banana"), 2, "source must be"),
    ("set-huge-count", lambda e: e.te("--set", "recon_iters=1000000000000"), 2, "past the ceiling"),
    ("set-too-many-generators", lambda e: e.te("--recipe", "adversarial", "--set", "generators=100000"), 2,
     "generators=100000 must be in [1, 16]"),
    ("set-no-students", lambda e: e.te("--recipe", "adversarial", "--set", "students=0"), 2,
     "students=0 must be in [1, 16]"),
    ("set-seed-as-float", lambda e: e.te("--set", "seed=1e30"), 2, "seed="),
    ("batch-size-huge", lambda e: e.te("--batch-size", "100000000"), 2, "past the ceiling"),
    ("batch-size-zero", lambda e: e.te("--batch-size", "0"), 2, "batch_size=0 must be >= 2"),
    ("seed-huge", lambda e: e.te("--seed", "99999999999999999999"), 2, "seed="),
    ("seed-negative", lambda e: e.te("--seed", "-3"), 2, "seed=-3"),
    ("threads-negative", lambda e: e.te("--threads", "-1"), 2, "threads=-1"),
    ("eval-limit-zero", lambda e: e.te("--eval-limit", "0"), 2, "eval_limit=0"),
    ("checkpoint-every-negative", lambda e: e.te("--checkpoint-every", "-2"), 2, "checkpoint_every=-2"),
    ("bits-out-of-range", lambda e: e.te("--bits", "W9A4"), 2, "out of range"),
    ("bits-garbage", lambda e: e.te("--bits", "banana"), 2, "cannot read bit widths"),
    ("first-last-bits-zero", lambda e: e.te("--first-last-bits", "0"), 2, "out of range"),
    ("steps-for-ptq", lambda e: e.te("--steps", "5"), 2, "--steps does not apply to recipe ptq"),
    ("unknown-recipe", lambda e: e.te("--recipe", "magic"), 2, "unknown recipe"),
    ("unknown-target", lambda e: e.te("--target", "tflite"), 2, "Invalid value for '--target'"),
    ("device-unknown", lambda e: e.te("--device", "tpu"), 2, "is not a device"),
    ("device-cuda-without-gpu", _no_cuda, 6, "no CUDA GPU"),
    ("nproc-zero", lambda e: e.te("--nproc", "0"), 2, "--nproc 0"),
    ("nproc-past-the-cores", lambda e: e.te("--device", "cpu", "--nproc", "64"), 2, "more processes than this"),
    ("gate-agreement-nan", lambda e: e.te("--min-agreement", "nan"), 2, "min_agreement=nan"),
    ("gate-mismatch-over-one", lambda e: e.te("--layer-max-mismatch", "2"), 2, "share in [0, 1]"),
    ("dry-run-with-resume", lambda e: ["train-export", "--resume", str(e.run), "--dry-run"], 2, "--dry-run"),
    ("resume-with-new-settings", lambda e: ["train-export", "--resume", str(e.run), "--bits", "W8A8"], 2,
     "cannot change them"),
    ("resume-nothing", lambda e: ["train-export", "--resume", str(e.tmp / "nope")], 2, "no interrupted run"),
    ("resume-finished-run", lambda e: ["train-export", "--resume", str(e.run)], 2, "nothing to resume"),
    # --- recipe YAML (exit 2)
    ("yaml-unknown-key", lambda e: _yaml(e, "recipe: dmkd\nstepz: 3\n"), 2, "unknown key(s) stepz"),
    ("yaml-list-document", lambda e: _yaml(e, "- just\n- a list\n"), 2, "mapping"),
    ("yaml-recipe-is-a-list", lambda e: _yaml(e, "recipe: [ptq]\n"), 2, "must be a name"),
    ("yaml-number-keys", lambda e: _yaml(e, "1: 2\n"), 2, "keys must be names"),
    ("yaml-billion-laughs", lambda e: _yaml(e, _LAUGHS), 2, "expands to more than"),
    ("yaml-recursive-alias", lambda e: _yaml(e, "steps: &a [*a]\n"), 2, "expands to more than"),
    ("yaml-python-tag", lambda e: _yaml(e, "recipe: !!python/object/apply:os.system ['true']\n"), 2,
     "not valid YAML"),
    ("yaml-not-utf8", lambda e: _yaml(e, b"\xff\xfe\x00recipe: ptq"), 2, "not UTF-8"),
    ("yaml-huge-file", lambda e: _yaml(e, "# " + "x" * (2 << 20) + "\n"), 2, "a recipe YAML is a few lines"),
    ("yaml-missing", lambda e: e.te("--config", str(e.tmp / "none.yaml")), 2, "cannot read"),
    ("yaml-contradicts-recipe", lambda e: _yaml(e, "recipe: dmkd\n", "--recipe", "gdfq"), 2, "contradicts"),
    # --- teacher: model card and weights (exit 4, before any work)
    ("card-missing", lambda e: e.te() + ["--teacher", str(e.tmp / "none.json")], 4, "not found"),
    ("card-not-utf8", lambda e: _teacher_te(e, e.file("c.json", b"\xff\xfe{")), 4, "cannot read model card"),
    ("card-not-an-object", lambda e: _teacher_te(e, e.file("c.json", "[1, 2]")), 4, "must hold a JSON object"),
    ("card-shape-text", lambda e: _teacher_te(e, e.card_with(input_shape="abc")), 4, "input_shape must be"),
    ("card-shape-negative", lambda e: _teacher_te(e, e.card_with(input_shape=[1, 28, -28])), 4,
     "input_shape must be"),
    ("card-mean-channels", lambda e: _teacher_te(e, e.card_with(mean=[0.1, 0.2, 0.3])), 4,
     "mean has 3 values for 1 input channels"),
    ("card-std-zero", lambda e: _teacher_te(e, e.card_with(std=[0.0])), 4, "std > 0"),
    ("card-class-names-numbers", lambda e: _teacher_te(e, e.card_with(class_names=[1, 2])), 4,
     "class_names must be"),
    ("card-arch-list", lambda e: _teacher_te(e, e.card_with(arch=["resnet8"])), 4, "arch must be a name"),
    ("card-unknown-field", lambda e: _teacher_te(e, e.card_with(unknown_field=1)), 4, "cannot read model card"),
    ("card-over-1mib", lambda e: _teacher_te(e, e.card_with(notes="x" * (1 << 20))), 4, "over 1 MiB"),
    ("weights-nan", _nan_weights, 4, "NaN or infinite"),
    ("weights-inf-bn-statistics", _inf_bn, 4, "NaN or infinite"),
    ("weights-truncated", _truncated_weights, 4, "cannot read safetensors"),
    ("weights-missing-tensor", _missing_key, 4, "do not fit the model"),
    ("weights-pickled-object", _pickled_weights, 4, "weights-only"),
    # --- output folder (exit 2, nothing written)
    ("out-is-a-file", lambda e: e.te() + ["--out", str(e.file("f", "a file"))], 2, "is a file"),
    ("out-under-a-file", lambda e: e.te() + ["--out", str(e.file("f", "a file") / "run")], 2, "cannot create"),
    ("out-not-utf8", lambda e: e.te() + ["--out", str(e.tmp) + "/r\udcffun"], 2, "not valid UTF-8"),
    ("out-read-only", lambda e: e.te() + ["--out", "/sys/dfq-deploy-run"], 2, "cannot create"),
    ("out-exists", lambda e: e.te() + ["--out", str(e.run)], 2, "already exists"),
    # --- evaluation data (exit 3)
    ("fmnist-missing", lambda e: e.te("--data-root", str(e.tmp / "none")), 3, "not found"),
    ("fmnist-garbage", _garbage_fmnist, 3, "cannot read"),
    ("imagefolder-corrupt-image", _corrupt_image, 3, "cannot read image"),
    ("imagefolder-empty", _empty_image_folder, 3, "cannot read images"),
    ("imagefolder-missing", lambda e: ["validate", str(e.run), "--data", f"imagefolder:{e.tmp}/none", "--quiet"],
     3, "not found"),
    ("data-unknown", lambda e: ["validate", str(e.run), "--data", "banana", "--quiet"], 3, "unknown evaluation data"),
    # --- ONNX files and run directories
    ("onnx-empty", lambda e: ["inspect", str(e.file("m.onnx", b"")), "--runtime", "none"], 4, "holds no ONNX graph"),
    ("onnx-garbage", lambda e: ["validate", str(e.file("m.onnx", b"\x00garbage\xff" * 10)), "--quiet"], 4,
     "not a readable ONNX model"),
    ("onnx-newer-ir", _newer_ir, 4, "newer than this onnx"),
    ("onnx-external-data-escapes", _escaping_external_data, 4, "outside the model's folder"),
    ("onnx-metadata-not-json", lambda e: ["validate", str(e.onnx_with_meta("dfq_deploy.mean", "[1")), "--quiet"], 4,
     "is not JSON"),
    ("onnx-metadata-bad-shape",
     lambda e: ["validate", str(e.onnx_with_meta("dfq_deploy.input_shape", "[1, -3, 5]")), "--quiet"], 4,
     "malformed dfq-deploy metadata"),
    ("onnx-without-metadata", _no_metadata, 2, "no dfq-deploy metadata"),
    ("onnx-missing", lambda e: ["inspect", str(e.tmp / "none.onnx")], 4, "not found"),
    ("run-student-truncated", _truncated_student, 4, "student.safetensors"),
    ("run-report-garbage", _garbage_report, 2, "not a readable run report"),
    ("export-not-a-run", lambda e: ["export", str(e.tmp), "--profile", "tensorrt"], 2, "not a dfq-deploy run"),
    ("export-out-is-a-folder", lambda e: ["export", str(e.run), "--profile", "tensorrt", "--out", str(e.tmp)], 2,
     "is a folder"),
    ("export-out-not-utf8",
     lambda e: ["export", str(e.run), "--profile", "tensorrt", "--out", str(e.tmp) + "/m\udcff.onnx"], 2,
     "not valid UTF-8"),
    ("validate-unknown-runtime", lambda e: ["validate", str(e.run), "--runtimes", "foo"], 2, "unknown runtime"),
    ("validate-limit-zero", lambda e: ["validate", str(e.run), "--limit", "0"], 2, "limit=0"),
    ("validate-out-is-a-file", lambda e: ["validate", str(e.run), "--out", str(e.file("a-file.txt", "x"))], 2,
     "is a file: the reports go into a folder"),
    ("validate-nothing-compared", _no_tensorrt, 6, "nothing was compared"),
    ("validate-onnx-against-itself",
     lambda e: ["validate", str(e.run / "model.onnx"), "--runtimes", "torch", "--quiet"], 2, "nothing to compare"),
    ("compile-without-tensorrt", _compile_without_tensorrt, 6, "TensorRT is not installed"),
    ("compile-onnx-missing", lambda e: ["compile", str(e.tmp / "none.onnx"), "--target", "tensorrt"], 4, "not found"),
    # --- pretrain
    ("pretrain-out-exists", lambda e: ["pretrain", "--out", str(e.card), "--epochs", "1"], 2, "already exists"),
    ("pretrain-unknown-arch", lambda e: ["pretrain", "--out", str(e.tmp / "t.json"), "--arch", "nope"], 4,
     "unknown model"),
    ("pretrain-zero-epochs", lambda e: ["pretrain", "--out", str(e.tmp / "t.json"), "--epochs", "0"], 2,
     "epochs=0"),
    ("pretrain-negative-limit", lambda e: ["pretrain", "--out", str(e.tmp / "t.json"), "--limit", "-1"], 2,
     "--limit -1 must be at least 1"),
    ("pretrain-resume-nothing", lambda e: ["pretrain", "--out", str(e.tmp / "t.json"), "--resume"], 2,
     "no stopped pretraining"),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A tiny teacher and one finished run of it, made once for the whole matrix."""
    root = tmp_path_factory.mktemp("matrix")
    card = write_tiny_card(root, make_tiny_teacher())
    run = root / "run"
    r = CliRunner().invoke(main, ["train-export", "--teacher", str(card), *FAST, "--out", str(run)])
    assert r.exit_code == 0, r.output
    return card, run


def _snapshot(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("case,build,code,text", MATRIX, ids=[m[0] for m in MATRIX])
def test_bad_input(shared, tmp_path, case, build, code, text):
    card, run = shared
    env = Env(tmp_path / "case", card, run)
    env.tmp.mkdir()
    args = build(env)
    before = _snapshot(run.parent)
    r = CliRunner().invoke(main, args)
    out = r.output
    assert r.exit_code == code, f"{case}: exit {r.exit_code}\n{out}"
    assert text in out, f"{case}: {text!r} not in\n{out}"
    assert "Traceback" not in out and "internal error" not in out, out
    if code != 2 or "Usage:" not in out:  # click prints its own usage errors (with a --help pointer)
        assert re.search(r"^error: ", out, re.M) and "fix:" in out, f"{case}: no error line with a fix\n{out}"
    # nothing half-written: no run directory, partial run or stray file appeared; the shared run is untouched
    assert not (env.tmp / "run").exists() and not list(env.tmp.glob(".run.partial*")), list(env.tmp.iterdir())
    assert _snapshot(run.parent) == before


def test_validate_on_an_emulated_cpu_without_qemu_is_exit_6(shared, tmp_path, monkeypatch):
    """``--emulate-cpu`` where qemu-user-static is missing (or off x86): one error line naming the package, exit 6,
    no report folder."""
    monkeypatch.setattr("dfq_deploy.runtimes.emulated.emulator", lambda: None)
    _, run = shared
    out = tmp_path / "reports"
    r = CliRunner().invoke(main, ["validate", str(run), "--emulate-cpu", "Haswell", "--limit", "8", "--quiet",
                                  "--out", str(out)])
    assert r.exit_code == 6, r.output
    assert re.search(r"^error: qemu-x86_64-static is not installed", r.output, re.M) and "fix:" in r.output
    assert "Traceback" not in r.output and not out.exists()


def test_docs_list_every_case():
    """docs/errors.md is the matrix's table: one row per case, with the same exit code."""
    text = (Path(__file__).parents[2] / "docs" / "errors.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \|.*?\| (\d) \|", text, re.M))
    missing = [c for c, *_ in MATRIX if c not in rows]
    wrong = [c for c, _, code, _ in MATRIX if c in rows and int(rows[c]) != code]
    assert not missing and not wrong, f"missing from docs/errors.md: {missing}; other exit code there: {wrong}"
    assert len(MATRIX) >= 40


def _table() -> str:
    """The rows of docs/errors.md, from running every case (``python -m tests.cli.test_bad_inputs``)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="dfq-matrix-"))
    card = write_tiny_card(root, make_tiny_teacher())
    run = root / "run"
    assert CliRunner().invoke(main, ["train-export", "--teacher", str(card), *FAST, "--out", str(run)]).exit_code == 0
    rows = ["| case | command (paths shortened) | exit | first line of the message |", "|---|---|---|---|"]
    for i, (case, build, code, _) in enumerate(MATRIX):
        env = Env(root / f"c{i}", card, run)
        env.tmp.mkdir()
        try:
            args = build(env)
        except pytest.skip.Exception:
            rows.append(f"| `{case}` | (skipped on this machine) | {code} | |")
            continue
        r = CliRunner().invoke(main, args)
        first = next((ln for ln in r.output.splitlines() if ln.startswith(("error:", "Error:"))), r.output.strip())
        shown = " ".join(a if len(a) < 60 else a[:57] + "..." for a in args)
        for long, short in ((str(env.tmp), "CASE"), (str(run), "RUN"), (str(card), "CARD"), (str(root), "TMP")):
            shown, first = shown.replace(long, short), first.replace(long, short)
        shown = shown.replace("--teacher CARD --quiet --out CASE/run ", "").replace("|", "\\|")
        shown = shown.encode("utf-8", "backslashreplace").decode()  # the non-UTF-8 path cases
        first = first.replace("|", "\\|")[:160]
        rows.append(f"| `{case}` | `{shown}` | {r.exit_code} | {first} |")
    shutil.rmtree(root, ignore_errors=True)
    return "\n".join(rows)


if __name__ == "__main__":
    print(_table())


def test_a_write_the_machine_refuses_is_exit_9_and_leaves_nothing(tmp_path):
    """A file-size limit (``ulimit -f``, as a full disk would) while the run writes: one typed line naming the file and
    what ran out, exit 9, and no run directory or partial folder left behind."""
    import resource
    import subprocess
    import sys

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    out = tmp_path / "run"
    exe = str(Path(sys.executable).parent / "dfq-deploy")
    proc = subprocess.run([exe, "train-export", "--set", "zeroq_steps=2", "--set", "calib_batches=1", "--set",
                           "recon.iters=2", "--batch-size", "16", "--eval-limit", "64", "--quiet", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, preexec_fn=limit_file_size)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert "error: cannot write" in proc.stderr and "file-size limit" in proc.stderr and "fix:" in proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
