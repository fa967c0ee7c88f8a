"""``dfq-deploy export``: a finished run's student written again for another runtime profile.

It lives beside the run's other steps, not in :mod:`dfq_deploy.export`: it reads a run directory
(:mod:`dfq_deploy.rundir`, which sits above the export layer), and the export layer stays free of run directories.
"""

from __future__ import annotations

from pathlib import Path

from ..config import check_output_file
from ..rundir import load_run, verify_run


def export_run(run_dir: str | Path, profile: str, out: str | Path | None = None):
    """Re-export the student of a ``train-export`` run for another runtime profile (same weights, same function).

    Returns the :class:`~dfq_deploy.export.ExportResult`. Writes ``RUN_DIR/model.<profile>.onnx`` by default.

    Raises:
        ConfigError: ``run_dir`` is not a run directory.
        ExportError: the model cannot be expressed in the profile (e.g. 8-bit unsigned activations for TensorRT).
    """
    from ..export import export_onnx
    from ..export.load import load_onnx_safely

    run_dir = Path(run_dir)
    out = check_output_file(out, "--out") if out else run_dir / f"model.{profile}.onnx"  # before any work
    verify_run(run_dir)
    student, card, report = load_run(run_dir)
    metadata = {}
    if (run_dir / "model.onnx").is_file():
        metadata = {p.key: p.value for p in load_onnx_safely(run_dir / "model.onnx").metadata_props
                    if p.key not in ("dfq_deploy.profile", "dfq_deploy.layer_bits")}
    portable = report["scheme"].get("portable", False)  # runs from before the portable scheme: not portable
    return export_onnx(student.eval(), out, tuple(card.input_shape), profile=profile, metadata=metadata,
                       portable=portable)
