"""Hostile inputs a user can hand the CLI: each ends in one `error:` line with a fix and a documented exit code,
never a traceback, never a silent success (the start of issue 13's matrix)."""

import json
import shutil

import pytest
from click.testing import CliRunner

from dfq_deploy.cli import main


@pytest.fixture
def card_dir(tmp_path, tiny_card):
    return tiny_card.parent


def _card(card_dir, name, **changes):
    raw = json.loads((card_dir / "tiny.json").read_text())
    raw.update(changes)
    (card_dir / name).write_text(json.dumps(raw))
    return card_dir / name


def _raw(card_dir, data: bytes):
    (card_dir / "c.json").write_bytes(data)
    return card_dir / "c.json"


@pytest.mark.parametrize("make,code,text", [
    (lambda d: _raw(d, b"\xff\xfe{"), 4, "cannot read model card"),
    (lambda d: _raw(d, b"[1, 2]"), 4, "must hold a JSON object"),
    (lambda d: _card(d, "c.json", input_shape="abc"), 4, "input_shape must be"),
    (lambda d: _card(d, "c.json", input_shape=[1, 28, -28]), 4, "input_shape must be"),
    (lambda d: _card(d, "c.json", mean=[0.1, 0.2, 0.3]), 4, "mean has 3 values for 1 input channels"),
    (lambda d: _card(d, "c.json", std=[0.0]), 4, "std > 0"),
    (lambda d: _card(d, "c.json", class_names=[1, 2]), 4, "class_names must be"),
    (lambda d: _card(d, "c.json", arch=["resnet8"]), 4, "arch must be a name"),
    (lambda d: _card(d, "c.json", unknown_field=1), 4, "cannot read model card"),
])
def test_malformed_teacher_cards(card_dir, tmp_path, make, code, text):
    card = make(card_dir)
    r = CliRunner().invoke(main, ["train-export", "--teacher", str(card), "--quiet", "--out", str(tmp_path / "run")])
    assert r.exit_code == code and text in r.output and "fix:" in r.output, r.output
    assert "Traceback" not in r.output and "internal error" not in r.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content,text", [(b"", "holds no ONNX graph"), (b"\x00garbage\xff" * 10, "ONNX")])
@pytest.mark.parametrize("command", [["inspect", "--runtime", "none"], ["inspect"], ["validate", "--quiet"]])
def test_empty_or_garbage_onnx_is_refused(tmp_path, content, text, command):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(content)
    r = CliRunner().invoke(main, [command[0], str(bad), *command[1:]])
    assert r.exit_code == 4 and text in r.output and "Traceback" not in r.output, r.output


def test_onnx_from_a_newer_ir_is_named(tmp_path):
    import onnx
    from onnx import helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    model.ir_version = onnx.IR_VERSION + 5
    path = tmp_path / "new.onnx"
    path.write_bytes(model.SerializeToString())
    r = CliRunner().invoke(main, ["inspect", str(path), "--runtime", "none"])
    assert r.exit_code == 4 and "newer than this onnx" in r.output


def test_out_that_is_a_file_is_refused_before_work(tmp_path, tiny_card):
    target = tmp_path / "run"
    target.write_text("a file")
    r = CliRunner().invoke(main, ["train-export", "--teacher", str(tiny_card), "--quiet", "--out", str(target)])
    assert r.exit_code == 2 and "is a file" in r.output and target.read_text() == "a file"
    shutil.rmtree(tmp_path / ".run.partial", ignore_errors=True)
