import json
import os

import torch

from dfq_deploy.models import load_teacher
from dfq_deploy.data.augment import augment
from dfq_deploy.models.pretrain import PretrainConfig, pretrain_teacher


def test_augment_keeps_shape_and_content():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    y = augment(x, pad=0, flip=False, gen=g)
    assert torch.equal(x, y)
    y = augment(x, pad=2, flip=True, gen=g)
    assert y.shape == x.shape


def test_pretrain_learns_and_writes_a_card(tmp_path):
    cfg = PretrainConfig(arch="resnet8", width=8, epochs=2, limit=4096, lr=0.1)
    card = pretrain_teacher(cfg, tmp_path / "t.json", command="dfq-deploy pretrain --test", progress=False)
    assert card.test_accuracy > 30.0  # chance is 10 %; two small epochs already learn
    raw = json.loads((tmp_path / "t.json").read_text())
    assert raw["command"] == "dfq-deploy pretrain --test" and raw["train"]["epochs"] == 2
    model, _ = load_teacher(tmp_path / "t.json")
    assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    assert not list(tmp_path.glob("*.tmp"))
    # readable by another account (a CI user, a deployment service), as any file the user's umask allows
    umask = os.umask(0)
    os.umask(umask)
    for name in ("t.json", "t.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_a_stopped_pretraining_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import signal

    import pytest
    from safetensors.torch import load_file

    from dfq_deploy.checkpoint import RunInterrupted
    from dfq_deploy.errors import ConfigError
    from dfq_deploy.models import pretrain as pretrain_module

    cfg = PretrainConfig(arch="resnet8", width=4, epochs=2, limit=512, batch_size=128)  # 4 steps an epoch
    pretrain_teacher(cfg, tmp_path / "whole.json", progress=False)
    whole = load_file(tmp_path / "whole.safetensors")

    real_step, calls = pretrain_module._step, []

    def step_then_sigterm(*args):
        loss = real_step(*args)
        calls.append(loss)
        if len(calls) == 6:  # in the middle of the second epoch
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(pretrain_module, "_step", step_then_sigterm)
    out = tmp_path / "split.json"
    with pytest.raises(RunInterrupted) as stopped:
        pretrain_teacher(cfg, out, progress=False)
    assert stopped.value.exit_code == 128 + signal.SIGTERM and len(calls) == 6
    assert not out.exists() and not out.with_suffix(".safetensors").exists()
    assert (tmp_path / "split.partial" / "checkpoint.pt").is_file()
    monkeypatch.setattr(pretrain_module, "_step", real_step)
    with pytest.raises(ConfigError, match="add --resume"):  # not silently started again
        pretrain_teacher(cfg, out, progress=False)
    with pytest.raises(ConfigError, match="lr=0.1 -> 0.05"):
        pretrain_teacher(PretrainConfig(**{**cfg.__dict__, "lr": 0.05}), out, progress=False, resume=True)
    card = pretrain_teacher(cfg, out, progress=False, resume=True)
    split = load_file(tmp_path / "split.safetensors")
    assert split.keys() == whole.keys() and all(torch.equal(split[k], whole[k]) for k in whole)
    assert [h["epoch"] for h in card.train["history"]] == [1, 2]
    assert not (tmp_path / "split.partial").exists()
    with pytest.raises(ConfigError, match="no stopped pretraining"):
        pretrain_teacher(cfg, tmp_path / "other.json", progress=False, resume=True)
