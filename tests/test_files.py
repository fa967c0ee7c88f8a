"""atomic_write / atomic_path leave the old file or the new one; file_sha256 hashes in chunks."""

import hashlib
import os

import pytest

from dfq_deploy import files
from dfq_deploy.files import atomic_path, atomic_write, file_sha256


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    atomic_write(target, "new\n")
    assert target.read_text() == "new\n"
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failing_writer_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_modes_follow_the_umask(tmp_path):
    mask = _umask()
    atomic_write(tmp_path / "shared", "x")
    atomic_write(tmp_path / "private", "x", mode=0o600)
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o600 & ~mask


def test_writer_that_replaces_the_temporary_by_name(tmp_path):
    target = tmp_path / "w.bin"
    with atomic_path(target) as tmp:
        tmp.unlink()
        tmp.write_bytes(b"abc")  # as a library writing to a file name does
    assert target.read_bytes() == b"abc"


def test_file_sha256_streams(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_CHUNK", 7)
    data = os.urandom(100)
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    reads = []
    real_open = open

    def spy_open(*a, **k):
        f = real_open(*a, **k)
        orig = f.read
        f.read = lambda n=-1: reads.append(n) or orig(n)
        return f

    monkeypatch.setattr("builtins.open", spy_open)
    file_sha256(tmp_path / "f")
    assert reads and all(0 < n <= 7 for n in reads)


def test_a_refused_write_is_told_from_other_errors():
    import errno

    from dfq_deploy.errors import StorageError
    from dfq_deploy.files import storage_failure

    full = storage_failure("/out/model.onnx", OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(full, StorageError) and full.exit_code == 9 and "/out/model.onnx: the disk is full" in str(full)
    try:  # a library that wraps the OSError in its own exception is still read through
        try:
            raise OSError(errno.EFBIG, "File too large")
        except OSError as inner:
            raise RuntimeError("writer failed") from inner
    except RuntimeError as outer:
        assert "file-size limit" in str(storage_failure("/out/x", outer))
    # an error that names another cause is not a storage failure (on a machine with free space and no size limit)
    assert storage_failure("/out/x", FileNotFoundError(errno.ENOENT, "No such file")) is None
    assert storage_failure("/out/x", ValueError("bad")) is None
