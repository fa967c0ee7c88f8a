"""Low-bit schemes built from Brevitas quantizers, and the one verb that applies them to a float model."""

from .reconstruct import ReconstructionConfig, reconstruct
from .scheme import QuantScheme, calibrate, load_quantized_state, quantize_model

__all__ = ["QuantScheme", "quantize_model", "calibrate", "load_quantized_state", "reconstruct",
           "ReconstructionConfig"]
