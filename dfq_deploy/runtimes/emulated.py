"""ONNX Runtime on an emulated CPU: the same model, the same wheel, another instruction set.

Integer kernels are chosen by the CPU they run on, so a machine with VNNI never runs the AVX2 kernels that a CPU
without it would (:mod:`dfq_deploy.isa`). Debian's ``qemu-user-static`` runs one process on an emulated CPU:
``qemu-x86_64-static -cpu Haswell python ...`` makes ONNX Runtime pick its AVX2 kernels on any x86 host.
:class:`EmulatedCPU` starts one such process (:mod:`._ort_child`, which imports only numpy and onnxruntime) and
hands out sessions that run in it, with ``InferenceSession.run``'s signature, so the parity gate's layer-local
check and end-to-end run can use them unchanged; :class:`EmulatedOnnxRuntime` is the runtime built on it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..errors import RuntimeUnavailableError
from .base import Runtime

# qemu's CPU models this project uses, and what each stands for
EMULATED_CPUS = {"Haswell": "x86-64 AVX2 without AVX-512 or VNNI"}


def emulator() -> str | None:
    """Path of ``qemu-x86_64-static`` when this is an x86 host that has it, else None."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    return shutil.which("qemu-x86_64-static")


def _unavailable() -> RuntimeUnavailableError:
    return RuntimeUnavailableError("qemu-x86_64-static is not installed (or this is not an x86 machine)",
                                   hint="apt-get install qemu-user-static (`make test` installs it)")


class EmulatedSession:
    """One ONNX Runtime session inside an :class:`EmulatedCPU`'s process."""

    def __init__(self, cpu: "EmulatedCPU", sid: int):
        self.cpu, self.sid = cpu, sid

    def run(self, output_names, feeds: dict) -> list[np.ndarray]:
        reply = self.cpu._call({"op": np.array("run"), "id": np.array(self.sid),
                                "outputs": np.array(list(output_names or []), dtype=str),
                                **{f"in:{k}": np.ascontiguousarray(v) for k, v in feeds.items()}})
        return [reply[k] for k in reply if k.startswith("out:")]


class EmulatedCPU:
    """A child Python on qemu's ``model`` CPU serving ONNX Runtime sessions (a context manager)."""

    def __init__(self, model: str = "Haswell", threads: int = 1):
        self.model, self.threads = model, threads
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "EmulatedCPU":
        qemu = emulator()
        if qemu is None:
            raise _unavailable()
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        self.proc = subprocess.Popen([qemu, "-cpu", self.model, sys.executable, "-m", "dfq_deploy.runtimes._ort_child",
                                      str(self.threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None

    def _call(self, request: dict) -> dict:
        from ._ort_child import read_message, write_message

        assert self.proc is not None, "use EmulatedCPU as a context manager"
        try:
            write_message(self.proc.stdin, request)
            reply = read_message(self.proc.stdout)
        except (BrokenPipeError, OSError):
            reply = None
        if reply is None:
            raise RuntimeError(f"ONNX Runtime under qemu -cpu {self.model} exited ({self.proc.poll()})")
        if "error" in reply:
            raise RuntimeError(f"ONNX Runtime under qemu -cpu {self.model}: {reply['error']}")
        return reply

    def session(self, model, optimize: bool = True) -> EmulatedSession:
        """A session for ``model`` (an ``onnx.ModelProto``, serialized bytes or a path) at level ALL or none."""
        data = (Path(model).read_bytes() if isinstance(model, (str, Path)) else
                model if isinstance(model, bytes) else model.SerializeToString())
        reply = self._call({"op": np.array("load"), "model": np.frombuffer(data, np.uint8),
                            "optimize": np.array(int(optimize))})
        return EmulatedSession(self, int(reply["id"]))

    def cpu_info(self) -> dict:
        """:func:`dfq_deploy.isa.cpu_info` as the emulated process sees it."""
        return json.loads(str(self._call({"op": np.array("cpu")})["cpu"]))


class EmulatedOnnxRuntime(Runtime):
    """ONNX Runtime (CPU, optimisation level ALL) on qemu's ``cpu`` model."""

    name = "onnxruntime-emulated"

    def __init__(self, onnx_path: str | Path, cpu: str = "Haswell", threads: int = 1):
        super().__init__()
        self.onnx_path = Path(onnx_path)
        self.cpu = EmulatedCPU(cpu, threads)
        self.child_cpu: dict | None = None   # cpu_info() as the emulated process saw it
        self.session = None

    @classmethod
    def is_available(cls) -> bool:
        return emulator() is not None

    @classmethod
    def unavailable_reason(cls) -> tuple[str, str]:
        e = _unavailable()
        return e.args[0], e.hint  # the message alone (str() appends the fix line)

    def _activate(self) -> None:
        from ..onnx_file import load_onnx_safely

        self.input_name = load_onnx_safely(self.onnx_path).graph.input[0].name
        self.cpu.__enter__()
        self.child_cpu = self.cpu.cpu_info()
        self.session = self.cpu.session(self.onnx_path)

    def _deactivate(self) -> None:
        self.cpu.__exit__(None, None, None)
        self.session = None

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([], {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
