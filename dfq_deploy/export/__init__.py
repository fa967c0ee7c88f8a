"""QDQ ONNX export per target runtime profile, graph passes, integer-kernel inspection and TensorRT rule checks."""

from .inspect import KernelCensus, layer_bits, ort_kernel_census
from .onnx_export import PROFILES, ExportResult, export_onnx
from .trt_rules import TensorRTCheck, Violation, check_tensorrt_rules

__all__ = ["PROFILES", "ExportResult", "export_onnx", "KernelCensus", "ort_kernel_census", "layer_bits",
           "TensorRTCheck", "Violation", "check_tensorrt_rules"]
