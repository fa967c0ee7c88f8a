import gzip

import pytest
import torch

from dfq_deploy.data import FASHION_MNIST_DIR, load_eval_set, load_fashion_mnist
from dfq_deploy.errors import DataError


def test_reads_debian_test_split():
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [1000] * 10


def test_eval_set_is_normalised_and_limited():
    d = load_eval_set("fashion-mnist", (0.2860,), (0.3530,), limit=300)
    assert len(d) == 300 and d.images.shape == (300, 1, 28, 28)
    assert abs(d.images.mean().item()) < 0.2


def test_missing_files_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", tmp_path)


def test_corrupt_file_is_a_data_error(tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes((FASHION_MNIST_DIR / name).read_bytes()[:100])
    with pytest.raises(DataError):
        load_fashion_mnist("test", tmp_path)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + b"\x00" * 20)
    with pytest.raises(DataError, match="not a valid IDX"):
        load_fashion_mnist("test", tmp_path)


def test_unknown_split_and_set():
    with pytest.raises(DataError):
        load_fashion_mnist("validation")
    with pytest.raises(DataError):
        load_eval_set("imagenet", (0.5,), (0.5,))
