"""Writing files so that a kill leaves the old file or the new one, never half of one; hashing them in chunks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

_CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_path(path: str | Path, *, mode: int = 0o666) -> Iterator[Path]:
    """A temporary file beside ``path`` for a writer that takes a file name; on a clean exit it is flushed to disk
    and renamed over ``path`` in one step (``os.replace``), on an exception removed.

    ``mode`` is the new file's permission before the umask (``0o666``: what ``open`` gives; ``0o600``: the owner
    only). The temporary file is created empty; the writer may replace it.
    """
    path = Path(path)
    # hidden, unique, and with the target's suffix (some writers pick a format by it)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            # a writer that replaced the file (safetensors writes its own, owner-only) still gives it ``mode``
            os.fchmod(fd, mode & ~_umask())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _umask() -> int:
    """The process's umask (read by setting it and back: the one portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, data: bytes | str, *, mode: int = 0o666) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (:func:`atomic_path`). Returns ``path``."""
    with atomic_path(path, mode=mode) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in chunks (never the whole file at once)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
