"""TensorRT back-end. ``tensorrt`` is imported only when this runtime is used.

Building and running engines is its own piece of work (engine cache keyed by ONNX hash, build options, GPU and
TensorRT version); until then this runtime reports itself unavailable with the reason.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from .base import Runtime


class TensorRTRuntime(Runtime):
    name = "tensorrt"

    @classmethod
    def is_available(cls) -> bool:
        # find_spec does not import the package (importing tensorrt loads libnvinfer, which may be absent)
        return importlib.util.find_spec("tensorrt") is not None and cls._engine_support()

    @classmethod
    def _engine_support(cls) -> bool:
        return False  # engine build/run is not implemented yet

    @classmethod
    def unavailable_reason(cls) -> tuple[str, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return ("TensorRT is not installed on this machine (the `tensorrt` Python package is missing)",
                    "run on a machine with TensorRT (e.g. a Jetson with JetPack), or use --target onnxruntime")
        return ("the TensorRT engine build/run back-end is not implemented in this version of dfq-deploy",
                "use --target onnxruntime for now")

    def _infer(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - never reached while unavailable
        raise NotImplementedError
