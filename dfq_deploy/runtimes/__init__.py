"""Runtimes behind one small interface and a registry: ``get_runtime("onnxruntime")``, built for a model from one
options object: ``make_runtime("tensorrt", "model.onnx", RuntimeOptions(engine="model.plan"))``.

Back-ends import their packages lazily, so listing them never imports TensorRT.
"""

from .base import RUNTIMES, Runtime, RuntimeOptions, available_runtimes, find_runtime, get_runtime, make_runtime

__all__ = ["RUNTIMES", "Runtime", "RuntimeOptions", "available_runtimes", "find_runtime", "get_runtime",
           "make_runtime"]
