"""ONNX Runtime on CPU with graph optimisation level ALL (the level at which QDQ groups fuse into integer kernels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .base import Runtime


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: int | None = None, optimize: bool = True):
        super().__init__()
        self.onnx_path = Path(onnx_path)
        self.threads = threads
        self.optimize = optimize  # False: no graph optimisation (the graph's plain semantics, a reference)
        self.session = None

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
        import onnxruntime as ort

        if not self.onnx_path.is_file():
            raise ConfigError(f"ONNX model {self.onnx_path} not found")
        so = ort.SessionOptions()
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if self.optimize
                                       else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        if self.threads:
            so.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(str(self.onnx_path), so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]
