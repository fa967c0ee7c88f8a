"""The run directory: where a ``train-export`` run is written, how it is committed, resumed, and read back.

A run is written into a hidden ``.NAME.partial`` folder beside its final place and renamed into place in one step
(:meth:`RunDir.commit`) once every file is there, so a failed run leaves nothing behind under its name. While a
process writes it, it holds an exclusive lock on the folder's ``lock`` file (``flock``: the kernel drops it when
the process dies, however it dies), so

- a second run aimed at the same ``--out`` fails at once, naming the process that holds it;
- a partial folder that nobody holds is what an interrupted run left. If it has a checkpoint, a new run aimed at
  it stops and says how to continue it (``--resume``) or discard it; one without a checkpoint (killed before its
  first checkpoint) is removed. Every run also names the interrupted runs it finds beside it, so they never pile
  up silently.

The partial folder holds ``run.json`` (the run's resolved settings) and ``checkpoint.pt`` while training; both go
when the run is committed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .errors import ConfigError, ModelError
from .files import atomic_write, file_sha256

log = logging.getLogger("dfq_deploy")

RUN_CONFIG = "run.json"
LOCK = "lock"
_WORK_FILES = (RUN_CONFIG, LOCK, "checkpoint.pt")


sha256 = file_sha256  # the name the pipeline and older code import


def partial_path(final: Path) -> Path:
    return final.parent / f".{final.name}.partial"


def _try_lock(folder: Path) -> int | None:
    """An fd holding the exclusive lock of ``folder``, or None when another process holds it."""
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _holder(folder: Path) -> str:
    try:
        return (folder / LOCK).read_text().strip() or "?"
    except OSError:
        return "?"


def _has_checkpoint(folder: Path) -> bool:
    return (folder / "checkpoint.pt").is_file() and (folder / RUN_CONFIG).is_file()


@dataclass
class RunDir:
    """A run directory being written: ``partial`` (locked by this process) becomes ``final`` on commit."""

    final: Path
    partial: Path
    lock_fd: int | None

    def commit(self) -> None:
        """Drop the working files and move the finished folder to its final name (an empty ``final`` is
        replaced); the lock goes with it. The folder and its files get the modes the user's umask gives new files
        (temporary files are created private, and the run is meant to be shared and deployed)."""
        for name in _WORK_FILES:
            (self.partial / name).unlink(missing_ok=True)
        write_manifest(self.partial)
        mask = _umask()
        for f in self.partial.iterdir():
            if f.is_file() and not f.is_symlink():
                os.chmod(f, 0o666 & ~mask)
        os.chmod(self.partial, 0o777 & ~mask)
        if self.final.exists():
            self.final.rmdir()  # empty (checked when the run started)
        os.replace(self.partial, self.final)
        self.release()

    def discard(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)
        self.release()

    def release(self) -> None:
        """Unlock, keeping the folder (an interrupted run, to be resumed)."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _default_final(out: str | Path | None, recipe: str, tag: str) -> Path:
    if out:
        return Path(out)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{recipe}-{tag.lower()}"


def interrupted_runs(parent: Path) -> list[Path]:
    """Partial folders in ``parent`` that no process holds and that have a checkpoint (runs to resume). Remains of
    runs without one, and the ``.NAME.partial-PID`` folders of versions before checkpoints whose process is gone,
    are removed (with a log line)."""
    found = []
    if not parent.is_dir():
        return found
    for folder in sorted(parent.glob(".*.partial*")):
        if not folder.is_dir():
            continue
        suffix = folder.name.rsplit(".partial", 1)[1]
        if suffix.startswith("-") and suffix[1:].isdigit():  # an older version's folder: PID in its name
            if not _pid_alive(int(suffix[1:])):
                log.warning("removed %s: what an older dfq-deploy left of a failed run", folder)
                shutil.rmtree(folder, ignore_errors=True)
            continue
        if suffix:
            continue
        fd = _try_lock(folder)
        if fd is None:
            continue  # a live run
        try:
            if _has_checkpoint(folder):
                found.append(folder)
            else:
                log.warning("removed %s: an interrupted run that had not reached its first checkpoint", folder)
                shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _resume_command(final: Path) -> str:
    return f"dfq-deploy train-export --resume {final}"


def _refuse_existing(final: Path) -> None:
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise ConfigError(f"run directory {final} already exists" + ("" if final.is_dir() else " and is a file")
                          + (" and is not empty" if final.is_dir() else ""),
                          hint="choose another --out or remove the old run")


def _refuse_taken(final: Path, partial: Path) -> bool:
    """Raise when a live run holds ``partial`` or an interrupted one waits in it to be resumed; True when it is the
    remains of a run that died before its first checkpoint (safe to remove)."""
    held = _try_lock(partial)
    if held is None:
        raise ConfigError(f"another dfq-deploy run (process {_holder(partial)}) is writing {final}",
                          hint="wait for it to finish, or choose another --out")
    try:
        if _has_checkpoint(partial):
            raise ConfigError(f"an interrupted run of {final} is in {partial}",
                              hint=f"continue it with `{_resume_command(final)}`, or delete {partial} to start over")
        return True
    finally:
        os.close(held)


def check_run_dir_free(out: str | Path | None, recipe: str, tag: str) -> None:
    """Raise what :func:`create_run_dir` would raise about ``out``, without creating anything."""
    final = _default_final(out, recipe, tag)
    _refuse_existing(final)
    if partial_path(final).is_dir():
        _refuse_taken(final, partial_path(final))


def create_run_dir(out: str | Path | None, recipe: str, tag: str) -> RunDir:
    """A new, locked partial folder for a run whose final directory is ``out`` (None: ``runs/<time>-<recipe>-<tag>``).

    Raises:
        ConfigError: the final directory exists and is not empty; another run is writing it; or an interrupted run
            of it waits to be resumed.
    """
    final = _default_final(out, recipe, tag)
    try:
        return _create(final)
    except OSError as e:
        raise ConfigError(f"cannot create the run directory {final}: {e.strerror or e}",
                          hint="choose a writable --out") from e


def _create(final: Path) -> RunDir:
    _refuse_existing(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(final)
    for folder in interrupted_runs(final.parent):
        if folder != partial:
            log.warning("an interrupted run waits in %s: `%s` continues it, or delete the folder", folder,
                        _resume_command(folder.parent / folder.name[1:-len(".partial")]))
    for _ in range(3):
        # made complete (locked) under a temporary name, then renamed: the partial folder never exists unlocked
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.init-", dir=final.parent))
        fd = _try_lock(tmp)
        assert fd is not None
        try:
            os.rename(tmp, partial)
            return RunDir(final, partial, fd)
        except OSError:
            os.close(fd)
            shutil.rmtree(tmp, ignore_errors=True)
        if _refuse_taken(final, partial):
            log.warning("removed %s: an interrupted run that had not reached its first checkpoint", partial)
            shutil.rmtree(partial, ignore_errors=True)
    raise ConfigError(f"could not create {partial}", hint="check that the folder is writable")


def reopen_run_dir(run_dir: str | Path) -> RunDir:
    """The locked partial folder of an interrupted run, for ``--resume``: ``run_dir`` is the run's final directory
    (as ``--out`` named it) or its partial folder.

    Raises:
        ConfigError: nothing to resume there, the run is complete, or another process is running it.
    """
    path = Path(run_dir)
    if path.name.startswith(".") and path.name.endswith(".partial"):
        partial, final = path, path.parent / path.name[1:-len(".partial")]
    else:
        final, partial = path, partial_path(path)
    if not partial.is_dir():
        if (final / "report.json").is_file():
            raise ConfigError(f"{final} is a finished run: there is nothing to resume",
                              hint="run `dfq-deploy validate` or `export` on it, or start a new run")
        others = interrupted_runs(final.parent) if final.parent.is_dir() else []
        hint = ("interrupted runs here: " + ", ".join(str(p.parent / p.name[1:-len('.partial')]) for p in others)
                if others else "start a new run without --resume")
        raise ConfigError(f"no interrupted run of {final} ({partial} does not exist)", hint=hint)
    fd = _try_lock(partial)
    if fd is None:
        raise ConfigError(f"{final} is still being trained by process {_holder(partial)}",
                          hint="wait for it, or stop it (Ctrl-C / kill PID) and resume then")
    if not (partial / RUN_CONFIG).is_file():
        os.close(fd)
        raise ConfigError(f"{partial} has no {RUN_CONFIG}: it cannot be resumed",
                          hint=f"delete {partial} and start a new run")
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        os.close(fd)
        raise ConfigError(f"{final} exists and is not empty, so the resumed run could not be committed there",
                          hint=f"move {final} away, then resume")
    return RunDir(final, partial, fd)


def write_run_config(rd: RunDir, config: dict) -> None:
    """The run's resolved settings, for ``--resume`` (written atomically)."""
    atomic_write(rd.partial / RUN_CONFIG, json.dumps(config, indent=2), mode=0o600)


def read_run_config(rd: RunDir) -> dict:
    try:
        return json.loads((rd.partial / RUN_CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{rd.partial / RUN_CONFIG} is not readable: {e}",
                          hint=f"delete {rd.partial} and start a new run") from e


MANIFEST = "manifest.json"
# the files a run is deployed and re-validated from; the validation reports are rewritten by `validate`
_CHECKED = ("model.onnx", "student.safetensors", "report.json")


def write_manifest(folder: Path) -> None:
    """``manifest.json``: the sha256 and size of every file of a finished run (tamper evidence)."""
    files = {f.name: {"sha256": sha256(f), "bytes": f.stat().st_size}
             for f in sorted(folder.iterdir()) if f.is_file() and f.name != MANIFEST}
    atomic_write(folder / MANIFEST, json.dumps({"format": 1, "files": files}, indent=2) + "\n")


def verify_run(run_dir: str | Path) -> list[str]:
    """Check a run directory's deployable files against what the run wrote.

    Returns the files among ``model.onnx``, ``student.safetensors`` and ``report.json`` whose sha256 differs from
    the run's ``manifest.json`` (tamper evidence: reported, e.g. a hand-edited or re-optimised graph may be
    validated on purpose; runs written before manifests existed return []).

    Raises:
        ModelError: ``model.onnx`` records another student's sha256 than ``student.safetensors`` has (comparing
            them would be meaningless), or the manifest is unreadable.
    """
    from .errors import ModelError
    from .export.load import load_onnx_safely

    run_dir = Path(run_dir)
    manifest = run_dir / MANIFEST
    changed: list[str] = []
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError, TypeError) as e:
            raise ModelError(f"{manifest} is not readable: {e}",
                             hint="restore the run's manifest.json, or delete it to skip the check") from e
        changed = [name for name in _CHECKED if name in files and (run_dir / name).is_file()
                   and sha256(run_dir / name) != files[name].get("sha256")]
        if changed:
            log.warning("%s in %s changed since the run wrote them (sha256 differs from %s)", ", ".join(changed),
                        run_dir, MANIFEST)
    onnx_path, weights = run_dir / "model.onnx", run_dir / "student.safetensors"
    if onnx_path.is_file() and weights.is_file():
        recorded = {p.key: p.value for p in load_onnx_safely(onnx_path).metadata_props}.get("dfq_deploy.student_sha256")
        actual = sha256(weights)
        if recorded and recorded != actual:
            raise ModelError(f"{onnx_path} does not belong to {weights}: it was exported from a student with sha256 "
                             f"{recorded[:12]}..., this one is {actual[:12]}...",
                             hint=f"re-export it from these weights (`dfq-deploy export {run_dir}`) or put the run's "
                                  "own model.onnx back")
    return changed


def load_run(run_dir: str | Path):
    """(student, teacher's model card, run report) of a ``train-export`` run directory.

    The student is rebuilt from the teacher and the scheme in ``report.json`` and its trained weights are read from
    ``student.safetensors`` (no pickle).

    Raises:
        ConfigError: not a run directory, or weights that do not fit the run's scheme and teacher.
    """
    import torch
    from safetensors.torch import load_file

    from .models import load_teacher
    from .quant import QuantScheme, quantize_model

    run_dir = Path(run_dir)
    report_path, weights = run_dir / "report.json", run_dir / "student.safetensors"
    if not report_path.is_file() or not weights.is_file():
        raise ConfigError(f"{run_dir} is not a dfq-deploy run directory (report.json or student.safetensors missing)",
                          hint="pass the folder that `dfq-deploy train-export` wrote")
    try:
        report = json.loads(report_path.read_text())
        # runs from before the portable scheme kept full 8-bit weight codes: export them as they were trained
        scheme = QuantScheme(**{"portable": False, **report["scheme"]})
        teacher_card = report["teacher"]["card"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{report_path} is not a readable run report: {e}",
                          hint="restore the run's report.json (its sha256 is in manifest.json), or train the run "
                               "again") from e
    teacher, card = load_teacher(teacher_card)
    student = quantize_model(teacher, scheme)
    try:
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError, or OSError
        raise ModelError(f"cannot read {weights}: {str(e).splitlines()[0][:200]} (truncated or not a safetensors "
                         "file?)", hint="restore the run's student.safetensors (its sha256 is in manifest.json), or "
                                        "train the run again") from e
    try:
        student.load_state_dict(state)
    except RuntimeError as e:
        raise ConfigError(f"{weights} does not match the run's scheme and teacher: {e}",
                          hint="restore the run's student.safetensors (its sha256 is in manifest.json)") from e
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ModelError(f"{weights} holds NaN or infinite values ({', '.join(bad[:3])})",
                         hint="restore the run's student.safetensors (its sha256 is in manifest.json)")
    return student.eval(), card, report
