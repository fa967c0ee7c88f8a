import pytest
import torch

from dfq_deploy.config import config_from_dict
from dfq_deploy.errors import ConfigError, DataError
from dfq_deploy.quant import QuantScheme, quantize_model
from dfq_deploy.recipes import LISConfig, train_lis
from dfq_deploy.recipes.lis import course_picker
from dfq_deploy.synthesis.synthetic_set import load_synthetic_set, save_synthetic_set


def test_config_validation():
    cfg = config_from_dict(LISConfig, {"courses": ["fp", "W8A8"]})
    assert cfg.courses == ("fp", "W8A8")
    with pytest.raises(ConfigError):
        config_from_dict(LISConfig, {"courses": ["fp", "W9A4x"]})
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict(LISConfig, {"warmup_steps": 3})
    with pytest.raises(ConfigError, match="pixel_mean"):
        LISConfig(pixel_mean=(0.5,), pixel_std=())


def test_hierarchical_courses_open_in_order():
    pick = course_picker([[0], [1, 2], [3]])
    rng = torch.Generator().manual_seed(0)
    first_third = {pick(i, 300, rng) for i in range(100) for _ in range(3)}
    assert first_third == {0}
    middle = {pick(i, 300, rng) for i in range(100, 200) for _ in range(3)}
    assert middle == {0, 1, 2}
    last = [pick(i, 300, rng) for i in range(200, 300) for _ in range(3)]
    assert set(last) == {0, 1, 2, 3} and last.count(3) > 50


def test_lis_writes_the_set_once_and_reuses_it(tiny_teacher, tmp_path):
    cfg = LISConfig(num_images=24, inversion_steps=30, inversion_batch=12, steps=20, batch_size=12, log_every=1,
                    student_lr=0.01, calib_batches=1, inversion_lr=0.2, courses=("fp", "W8A8,W4A4"),
                    pixel_mean=(0.5,), pixel_std=(0.5,))
    student = quantize_model(tiny_teacher, QuantScheme(4, 4))
    hist = train_lis(tiny_teacher, student, cfg, (1, 28, 28), 10, progress=False, run_dir=tmp_path)
    inv = [h for h in hist if h["phase"] == "inversion"]
    assert len(inv) == 60
    first = [h["gen_ce"] for h in inv[:30]]
    assert first[-1] < first[0] and inv[29]["gen_bns"] < inv[0]["gen_bns"]  # the images invert the teacher
    assert {h["teacher"] for h in inv[:30]} == {"fp"}  # batch 0: float course only
    assert {"W8A8", "W4A4"} <= {h["teacher"] for h in inv[30:]}  # later batches sample the quantized course
    kd = [h["kd"] for h in hist if h["phase"] == "kd"]
    assert len(kd) == 20 and sum(kd[-5:]) < sum(kd[:5])
    images, labels, meta = load_synthetic_set(tmp_path / "synthetic_set.safetensors", (1, 28, 28))
    assert images.shape == (24, 1, 28, 28) and labels.shape == (24,) and meta["recipe"] == "lis"
    assert images.min() >= -1 - 1e-6 and images.max() <= 1 + 1e-6  # (0-.5)/.5 .. (1-.5)/.5
    # the set is reused for another model / bit width: no inversion this time
    other = quantize_model(tiny_teacher, QuantScheme(8, 8))
    cfg2 = LISConfig(synthetic_set=str(tmp_path / "synthetic_set.safetensors"), steps=3, batch_size=12,
                     calib_batches=1, log_every=1)
    hist2 = train_lis(tiny_teacher, other, cfg2, (1, 28, 28), 10, progress=False)
    assert [h for h in hist2 if h["phase"] == "inversion"] == [] and len(hist2) == 3


def test_synthetic_set_loader_rejects_bad_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_synthetic_set(tmp_path / "missing.safetensors", (1, 28, 28))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="not a safetensors"):
        load_synthetic_set(tmp_path / "junk.safetensors", (1, 28, 28))
    save_synthetic_set(tmp_path / "rgb.safetensors", torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), {})
    with pytest.raises(DataError, match="expects"):
        load_synthetic_set(tmp_path / "rgb.safetensors", (1, 28, 28))
    from safetensors.torch import save_file

    save_file({"images": torch.zeros(2, 1, 28, 28)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(DataError, match="not a dfq-deploy synthetic set"):
        load_synthetic_set(tmp_path / "foreign.safetensors", (1, 28, 28))
    assert not list(tmp_path.glob(".*partial*"))
