"""ONNX Runtime on CPU with graph optimisation level ALL (the level at which QDQ groups fuse into integer kernels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..ort_session import ort_session
from .base import Runtime, RuntimeOptions


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: int | None = None, optimize: bool = True):
        super().__init__()
        self.onnx_path = Path(onnx_path)
        self.threads = threads
        self.optimize = optimize  # False: no graph optimisation (the graph's plain semantics, a reference)
        self.session = None

    @classmethod
    def from_options(cls, model, options: RuntimeOptions = RuntimeOptions()) -> Runtime:
        """This runtime with ``threads`` and ``optimize``; with ``emulate_cpu``, ONNX Runtime on that emulated CPU
        (:class:`~.emulated.EmulatedOnnxRuntime`, one thread unless ``threads`` says more)."""
        if options.emulate_cpu is not None:
            from .emulated import EmulatedOnnxRuntime

            return EmulatedOnnxRuntime(model, cpu=options.emulate_cpu, threads=options.threads or 1)
        return cls(model, threads=options.threads, optimize=options.optimize)

    @classmethod
    def is_available(cls) -> bool:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
        return True

    @classmethod
    def unavailable_reason(cls) -> tuple[str, str]:
        return "onnxruntime is not installed", "pip install onnxruntime"

    def _activate(self) -> None:
        if not self.onnx_path.is_file():
            raise ConfigError(f"ONNX model {self.onnx_path} not found")
        self.session = ort_session(self.onnx_path, optimize=self.optimize, threads=self.threads)
        self.input_name = self.session.get_inputs()[0].name

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]
