"""The one place an ONNX Runtime session is made: CPU provider, optimisation level, threads and log level.

A low layer with no imports at module level beyond the standard library, so the export readers, the runtimes, the
parity checks and the emulated-CPU child (which must not load torch, nor onnx) all share it.
"""

from __future__ import annotations

from pathlib import Path

# errors only: ONNX Runtime warns about expected things (a "hardware specific" optimised model, unused initializers)
LOG_SEVERITY = 3


def ort_session(model, *, optimize: bool = True, threads: int | None = None, optimized_model_path: str | None = None):
    """An ``onnxruntime.InferenceSession`` on the CPU for ``model`` (an ``onnx.ModelProto``, serialized bytes or a
    path).

    Args:
        optimize: graph optimisation level ALL (where QDQ groups fuse into integer kernels); False: none, each node
            as the graph says (the graph's own semantics, a reference).
        threads: intra-op threads (None or 0: ONNX Runtime's default).
        optimized_model_path: where ONNX Runtime writes the graph it optimised (read by the kernel census).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = LOG_SEVERITY
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads:
        so.intra_op_num_threads = threads
    if optimized_model_path is not None:
        so.optimized_model_filepath = optimized_model_path
    if isinstance(model, (str, Path)):
        source = str(model)
    elif isinstance(model, (bytes, bytearray)):
        source = bytes(model)
    else:
        source = model.SerializeToString()
    return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
