"""Writing files so that a kill leaves the old file or the new one, never half of one; hashing them in chunks."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import StorageError

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
        try:
            yield tmp
        except Exception as e:
            failure = storage_failure(path, e)
            if failure is None:
                raise
            raise failure from e
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


_STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "a disk quota is full",
                   errno.EFBIG: "the file-size limit (ulimit -f) was reached",
                   errno.EROFS: "the file system is read-only"}
# below this much free space a writer's failure without an errno (torch.save reports a C++ stream error) is taken
# for a full disk
_NEARLY_FULL = 1 << 20


def storage_failure(path: str | Path, e: BaseException) -> StorageError | None:
    """A :class:`StorageError` naming ``path`` and what ran out, when ``e`` (or an exception it wraps) is the
    machine refusing a write; None when it is something else. Writers that report no errno (torch's C++ stream)
    are diagnosed from the file system: free space, and the process's file-size limit."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _STORAGE_ERRNOS:
            return _storage_error(path, _STORAGE_ERRNOS[seen.errno])
        seen = seen.__cause__ or seen.__context__
    if not isinstance(e, (OSError, RuntimeError)) or getattr(e, "errno", None) is not None:
        return None  # an error that says what it is (not found, permission, ...) is not diagnosed otherwise
    folder = Path(path).parent
    with contextlib.suppress(OSError):
        if shutil.disk_usage(folder).free < _NEARLY_FULL:
            return _storage_error(path, _STORAGE_ERRNOS[errno.ENOSPC])
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            return _storage_error(path, f"{_STORAGE_ERRNOS[errno.EFBIG]} ({limit} bytes)")
    return None


def _storage_error(path: str | Path, what: str) -> StorageError:
    return StorageError(f"cannot write {path}: {what}",
                        hint="free space (or raise the limit) where the output goes, or write it to another disk "
                             "(--out)")
