"""The same seed gives the same bytes: tiny `train-export` runs hashed against hashes recorded before a refactor.

A refactor that claims "behaviour unchanged" must leave `model.onnx` and `student.safetensors` byte-identical.
Float kernels differ between CPUs (vector width, FMA, the BLAS build), so the recorded hashes are keyed by a
fingerprint of this machine's float arithmetic and of the library versions that write the files; on a machine whose
fingerprint has no record the test says so and skips (record there, from a commit known to be right, with
`python tests/test_reproducible.py --record`).
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECORD = Path(__file__).parent / "golden" / "tiny_run_hashes.json"
TINY = ["--set", "calib_batches=1", "--batch-size", "16", "--eval-limit", "64", "--threads", "1", "--quiet"]
# one run per code path a refactor touches: the default recipe, a KD recipe's loop, the other export profile
RUNS = {
    "ptq-onnxruntime": ["--set", "zeroq_steps=3", "--set", "recon_iters=3", *TINY],
    "dmkd-onnxruntime": ["--recipe", "dmkd", "--steps", "3", "--warmup-steps", "1", "--set", "recon_iters=2", *TINY],
    "ptq-tensorrt": ["--target", "tensorrt", "--set", "zeroq_steps=3", "--set", "recon_iters=3", *TINY],
}
FILES = ("model.onnx", "student.safetensors")
_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}

_FINGERPRINT = """
import hashlib, importlib.metadata as md, torch
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
x = torch.randn(4, 8, 17, 17, generator=g)
w = torch.randn(16, 8, 3, 3, generator=g)
y = torch.nn.functional.conv2d(x, w, padding=1)
z = y.flatten(1) @ torch.randn(y[0].numel(), 10, generator=g)
h = hashlib.sha256(b''.join(t.numpy().tobytes() for t in (y, z, z.softmax(1), torch.sigmoid(z), z.exp().log1p())))
for name in ('torch', 'onnx', 'brevitas', 'safetensors', 'numpy', 'onnxscript'):
    try:
        h.update(f'{name}={md.version(name)};'.encode())
    except md.PackageNotFoundError:
        h.update(f'{name}=none;'.encode())
print(h.hexdigest()[:16])
"""


def _fingerprint() -> str:
    return subprocess.run([sys.executable, "-c", _FINGERPRINT], capture_output=True, text=True, check=True,
                          env=_ENV).stdout.strip()


def _exe() -> str:
    return str(Path(sys.executable).parent / "dfq-deploy")


def _hashes(run: str, out: Path) -> dict[str, str]:
    proc = subprocess.run([_exe(), "train-export", *RUNS[run], "--out", str(out)], capture_output=True, text=True,
                          timeout=900, env=_ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return {f: hashlib.sha256((out / f).read_bytes()).hexdigest() for f in FILES}


@pytest.mark.slow
@pytest.mark.parametrize("run", sorted(RUNS))
def test_a_tiny_run_writes_the_recorded_bytes(run, tmp_path):
    fingerprint = _fingerprint()
    recorded = json.loads(RECORD.read_text()).get(fingerprint)
    if recorded is None:
        pytest.skip(f"no hashes recorded for this machine's float arithmetic and library versions ({fingerprint})")
    assert _hashes(run, tmp_path / "run") == recorded[run], (
        f"{run}: the same seed no longer gives the same bytes on this machine: a change altered behaviour")


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    import tempfile

    table = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        table[_fingerprint()] = {run: _hashes(run, Path(tmp) / run) for run in sorted(RUNS)}
    RECORD.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    print(f"recorded {len(RUNS)} runs under {_fingerprint()} in {RECORD}")
