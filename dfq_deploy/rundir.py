"""The run directory: where a ``train-export`` run is written, how it is committed, and how it is read back.

A run is written into a hidden ``.NAME.partial-PID`` folder beside its final place and renamed into place in one
step (:func:`commit_run_dir`) once every file is there, so a failed run leaves nothing behind under its name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime
from pathlib import Path

from .errors import ConfigError


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare_run_dir(out: str | Path | None, recipe: str, tag: str) -> tuple[Path, Path]:
    """(final run directory, the partial folder to write into). ``out`` None: ``runs/<time>-<recipe>-<tag>``.

    Raises:
        ConfigError: the final directory exists and is not empty.
    """
    if out:
        final = Path(out)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        final = Path("runs") / f"{stamp}-{recipe}-{tag.lower()}"
    if final.exists() and any(final.iterdir()):
        raise ConfigError(f"run directory {final} already exists and is not empty",
                          hint="choose another --out or remove the old run")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return final, tmp


def commit_run_dir(tmp: Path, final: Path) -> None:
    """Move the finished partial folder to its final name (an empty ``final`` is replaced)."""
    if final.exists():
        final.rmdir()  # empty (checked by prepare_run_dir)
    os.replace(tmp, final)


def discard_run_dir(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def load_run(run_dir: str | Path):
    """(student, teacher's model card, run report) of a ``train-export`` run directory.

    The student is rebuilt from the teacher and the scheme in ``report.json`` and its trained weights are read from
    ``student.safetensors`` (no pickle).

    Raises:
        ConfigError: not a run directory, or weights that do not fit the run's scheme and teacher.
    """
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
        scheme = QuantScheme(**report["scheme"])
        teacher_card = report["teacher"]["card"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{report_path} is not a readable run report: {e}") from e
    teacher, card = load_teacher(teacher_card)
    student = quantize_model(teacher, scheme)
    try:
        student.load_state_dict(load_file(str(weights)))
    except RuntimeError as e:
        raise ConfigError(f"{weights} does not match the run's scheme and teacher: {e}") from e
    return student.eval(), card, report
