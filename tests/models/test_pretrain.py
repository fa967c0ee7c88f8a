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
