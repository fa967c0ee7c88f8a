"""The package's import layers (pyproject.toml, [tool.importlinter]): no circle, no upward import."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_are_kept():
    exe = Path(sys.executable).parent / "lint-imports"
    assert exe.is_file(), "import-linter is not installed: install the dev extras (make test does)"
    proc = subprocess.run([str(exe), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout
