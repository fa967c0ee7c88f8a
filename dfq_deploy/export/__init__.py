"""QDQ ONNX export per target runtime profile, graph passes and integer-kernel inspection."""

from .onnx_export import PROFILES, ExportResult, export_onnx
from .inspect import KernelCensus, ort_kernel_census

__all__ = ["PROFILES", "ExportResult", "export_onnx", "KernelCensus", "ort_kernel_census"]
