"""Runtimes behind one small interface and a registry: ``get_runtime("onnxruntime")``.

Back-ends import their packages lazily, so listing them never imports TensorRT.
"""

from .base import RUNTIMES, Runtime, available_runtimes, find_runtime, get_runtime

__all__ = ["RUNTIMES", "Runtime", "available_runtimes", "find_runtime", "get_runtime"]
