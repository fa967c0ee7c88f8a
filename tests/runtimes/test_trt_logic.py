"""The logic around TensorRT, tested with a fake ``tensorrt`` module (tests/runtimes/fake_tensorrt.py), since the
real library cannot be installed on these machines: cache keys, rebuilding unusable cached plans, `compile`'s plan
and record, plans refused on another GPU or version, typed errors, and `inspect` not building by default."""

import json

import pytest
from click.testing import CliRunner

from dfq_deploy.cli import main
from dfq_deploy.errors import ConfigError
from dfq_deploy.runtimes import trt as T

from . import fake_tensorrt


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    """A small tensorrt-profile export (made once)."""
    import torch

    from dfq_deploy.export import export_onnx
    from dfq_deploy.models import build_model
    from dfq_deploy.quant import QuantScheme, calibrate, quantize_model

    root = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)
    q = quantize_model(build_model("resnet8", width=4).eval(), QuantScheme(8, 8, trt_compatible=True))
    calibrate(q, [torch.randn(16, 1, 28, 28)])
    meta = {"dfq_deploy.input_shape": "[1, 28, 28]", "dfq_deploy.mean": "[0.0]", "dfq_deploy.std": "[1.0]"}
    return export_onnx(q.eval(), root / "m.onnx", (1, 28, 28), profile="tensorrt", metadata=meta).path


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("DFQ_DEPLOY_CACHE", str(tmp_path / "cache"))
    return fake_tensorrt.install(monkeypatch)


def test_cache_key_covers_every_build_input():
    ident = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}
    base = T.engine_key("a" * 64, T.EngineOptions(), ident)
    assert base == T.engine_key("a" * 64, T.EngineOptions(), dict(ident))
    variants = [T.engine_key("b" * 64, T.EngineOptions(), ident)]
    for field, value in (("workspace_mib", 512), ("min_batch", 2), ("opt_batch", 32), ("max_batch", 256)):
        variants.append(T.engine_key("a" * 64, T.EngineOptions(**{field: value}), ident))
    for field, value in (("tensorrt", "10.13.0"), ("gpu", "RTX 4090"), ("compute_capability", "8.9")):
        variants.append(T.engine_key("a" * 64, T.EngineOptions(), {**ident, field: value}))
    assert len({base, *variants}) == len(variants) + 1


@pytest.mark.parametrize("kwargs", [dict(min_batch=0), dict(min_batch=8, opt_batch=4), dict(max_batch=10 ** 6),
                                    dict(workspace_mib=1), dict(max_batch=2.5)])
def test_bad_engine_options_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        T.EngineOptions(**kwargs)


def test_build_then_cache_then_rebuild_on_any_option(fake, onnx_model):
    plan, how = T.load_or_build(onnx_model, T.EngineOptions(max_batch=128))
    assert how == "built" and len(fake.builds) == 1
    flags, workspace, shapes = fake.builds[0]
    assert flags == 1 << 5 and workspace == 1024 << 20  # strongly typed; workspace in bytes
    assert list(shapes.values()) == [((1, 1, 28, 28), (64, 1, 28, 28), (128, 1, 28, 28))]
    again, how = T.load_or_build(onnx_model, T.EngineOptions(max_batch=128))
    assert how == "cached" and again == plan and len(fake.builds) == 1
    T.load_or_build(onnx_model, T.EngineOptions(max_batch=128, workspace_mib=256))
    assert len(fake.builds) == 2 and fake.builds[1][1] == 256 << 20


@pytest.mark.parametrize("spoil", ["garbage", "truncated", "other-gpu-record", "no-record"])
def test_an_unusable_cached_plan_is_rebuilt_never_used(fake, onnx_model, spoil):
    plan, _ = T.load_or_build(onnx_model)
    cached = next((T.engine_cache_dir()).glob("*.plan"))
    record = cached.with_suffix(".json")
    if spoil == "garbage":
        cached.write_bytes(b"\x00" * 100)
    elif spoil == "truncated":
        cached.write_bytes(plan[: len(plan) // 2])
    elif spoil == "other-gpu-record":
        record.write_text(json.dumps({**json.loads(record.read_text()), "gpu": "A100-SXM4-80GB"}))
    else:
        record.unlink()
    new, how = T.load_or_build(onnx_model)
    assert how.startswith("rebuilt") and len(fake.builds) == 2, how
    assert new != plan and cached.read_bytes() == new  # the fresh plan replaced the bad one
    assert T.load_or_build(onnx_model)[1] == "cached"


def test_a_new_gpu_or_tensorrt_gets_its_own_plan(fake, onnx_model):
    T.load_or_build(onnx_model)
    fake.gpu = "Thor"
    assert T.load_or_build(onnx_model)[1] == "built"
    fake.__version__ = "10.13.0"
    assert T.load_or_build(onnx_model)[1] == "built"
    assert len(fake.builds) == 3 and len(list(T.engine_cache_dir().glob("*.plan"))) == 3


def test_parser_and_builder_failures_are_export_errors(fake, onnx_model):
    fake.parse_errors = ["In node 3 (Clip): INT8 input unsupported"]
    r = CliRunner().invoke(main, ["compile", str(onnx_model), "--target", "tensorrt", "--out",
                                  str(onnx_model.parent / "p.plan")])
    assert r.exit_code == 5 and "INT8 input unsupported" in r.output and "fix:" in r.output
    fake.parse_errors = []
    fake.build_fails = True
    r = CliRunner().invoke(main, ["compile", str(onnx_model), "--target", "tensorrt", "--out",
                                  str(onnx_model.parent / "p.plan")])
    assert r.exit_code == 5 and "could not build an engine" in r.output
    assert not (onnx_model.parent / "p.plan").exists()


def test_compile_writes_plan_and_record_and_runtime_checks_them(fake, onnx_model, tmp_path):
    out = tmp_path / "m.plan"
    r = CliRunner().invoke(main, ["compile", str(onnx_model), "--target", "tensorrt", "--out", str(out),
                                  "--batch", "1,8,32", "--workspace-mib", "256"])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "m.plan.json").read_text())
    assert record["gpu"] == "Orin (nvgpu)" and record["compute_capability"] == "8.7"
    assert record["tensorrt"] == "10.3.0" and record["options"]["max_batch"] == 32
    assert out.read_bytes().startswith(fake_tensorrt.MAGIC)
    # the same --out again: refused unless --overwrite
    r = CliRunner().invoke(main, ["compile", str(onnx_model), "--target", "tensorrt", "--out", str(out)])
    assert r.exit_code == 2 and "already exists" in r.output
    # running the plan here: deserialized, never rebuilt; its options come from the record
    rt = T.TensorRTRuntime(out)
    rt._activate()
    assert rt.how == "plan file" and rt.options.max_batch == 32 and len(fake.builds) == 1
    # on another GPU (or TensorRT) the plan is refused with the rebuild command, exit 6
    fake.gpu = "Thor"
    with pytest.raises(T.EngineError, match="built for gpu 'Orin \\(nvgpu\\)', this device has 'Thor'") as e:
        T.TensorRTRuntime(out)._activate()
    assert e.value.exit_code == 6 and "dfq-deploy compile" in e.value.hint
    fake.gpu = "Orin (nvgpu)"
    out.write_bytes(out.read_bytes()[:20])
    with pytest.raises(T.EngineError, match="do not match its record"):
        T.TensorRTRuntime(out)._activate()


def test_inspect_does_not_build_unless_asked(fake, onnx_model):
    r = CliRunner().invoke(main, ["inspect", str(onnx_model), "--runtime", "tensorrt"])
    assert r.exit_code == 0, r.output
    assert "not built (add --build-engine" in r.output and fake.builds == []
    r = CliRunner().invoke(main, ["inspect", str(onnx_model), "--runtime", "tensorrt", "--build-engine"])
    assert r.exit_code == 0 and "engine: built (" in r.output and len(fake.builds) == 1


def test_validate_refuses_a_plan_of_another_onnx(fake, onnx_model, tmp_path):
    other = tmp_path / "other.onnx"
    out = tmp_path / "m.plan"
    r = CliRunner().invoke(main, ["compile", str(onnx_model), "--target", "tensorrt", "--out", str(out)])
    assert r.exit_code == 0, r.output
    import onnx

    m = onnx.load(str(onnx_model))
    m.doc_string = "changed"
    onnx.save(m, str(other))
    r = CliRunner().invoke(main, ["validate", str(other), "--runtimes", "onnxruntime,tensorrt", "--engine", str(out),
                                  "--data", "synthetic", "--limit", "8", "--quiet"])
    assert r.exit_code == 4 and "was built from another ONNX file" in r.output, r.output
