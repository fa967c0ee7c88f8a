"""ONNX Runtime on an emulated CPU: the same model, the same wheel, another instruction set.

Integer kernels are chosen by the CPU they run on, so a machine with VNNI never runs the AVX2 kernels that a CPU
without it would (:mod:`dfq_deploy.isa`). Debian's ``qemu-user-static`` runs one process on an emulated CPU:
``qemu-x86_64-static -cpu Haswell python ...`` makes ONNX Runtime pick its AVX2 kernels on any x86 host. This runner
starts such a process (:mod:`._ort_child`, which imports only numpy and onnxruntime: torch would take minutes to
start under emulation) and returns its outputs, and the CPU features the emulated process saw.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import RuntimeUnavailableError
from .base import Runtime

# qemu's CPU model -> what it stands for: Haswell has AVX2 and FMA, no AVX-512 and no VNNI
EMULATED_CPUS = {"Haswell": "x86-64 AVX2 without VNNI"}


def emulator() -> str | None:
    """Path of ``qemu-x86_64-static`` when this is an x86 host that has it, else None."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    return shutil.which("qemu-x86_64-static")


class EmulatedOnnxRuntime(Runtime):
    """ONNX Runtime (CPU, optimisation level ALL) in a child process on qemu's ``cpu`` model."""

    name = "onnxruntime-emulated"

    def __init__(self, onnx_path: str | Path, cpu: str = "Haswell", threads: int = 1, timeout_s: float = 900):
        super().__init__()
        self.onnx_path = Path(onnx_path)
        self.cpu = cpu
        self.threads = threads
        self.timeout_s = timeout_s
        self.child_cpu: dict | None = None   # cpu_info() as the emulated process saw it

    @classmethod
    def is_available(cls) -> bool:
        return emulator() is not None

    @classmethod
    def unavailable_reason(cls) -> tuple[str, str]:
        return ("qemu-x86_64-static is not installed (or this is not an x86 machine)",
                "apt-get install qemu-user-static (`make test` installs it)")

    def _infer(self, x: np.ndarray) -> np.ndarray:
        qemu = emulator()
        if qemu is None:
            raise RuntimeUnavailableError(*self.unavailable_reason())
        with tempfile.TemporaryDirectory(prefix="dfq-emulated-") as tmp:
            inp, out = Path(tmp) / "input.npy", Path(tmp) / "output.npz"
            np.save(inp, np.ascontiguousarray(x, dtype=np.float32))
            cmd = [qemu, "-cpu", self.cpu, sys.executable, "-m", "dfq_deploy.runtimes._ort_child",
                   str(self.onnx_path), str(inp), str(out), str(self.threads)]
            env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s, env=env)
            if proc.returncode != 0 or not out.is_file():
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise RuntimeError(f"ONNX Runtime under {qemu} -cpu {self.cpu} exited {proc.returncode}: {tail[0]}")
            with np.load(out) as z:
                self.child_cpu = json.loads(str(z["cpu"]))
                return z["logits"]
