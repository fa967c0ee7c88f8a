"""The baseline a user without dfq-deploy would try: export the **float** model and let ONNX Runtime's own
``quantize_static`` insert QDQ nodes, calibrated on synthetic images (no training).

ONNX Runtime quantizes to 8-bit (QInt8 weights, QUInt8 activations) or 4-bit (QInt4 / QUInt4) types; other bit
widths raise :class:`ConfigError`. At 4 bits ONNX Runtime has no integer convolution kernels, so those graphs run
as dequantize + float convolution (the kernel census says so).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, ExportError
from ..files import atomic_path

_TYPES = {8: ("QInt8", "QUInt8"), 4: ("QInt4", "QUInt4")}


def ort_quantize_static(model: torch.nn.Module, out_path: str | Path, input_shape: tuple[int, int, int],
                        calib_batches: list[torch.Tensor], weight_bits: int = 8, act_bits: int = 8,
                        per_channel: bool = True) -> Path:
    """Write a QDQ model quantized by ``onnxruntime.quantization.quantize_static`` (MinMax calibration on
    ``calib_batches``) to ``out_path`` atomically. Input ``input``, output ``logits``, dynamic batch."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    if weight_bits not in _TYPES or act_bits not in _TYPES:
        raise ConfigError(f"ONNX Runtime quantize_static supports 8 or 4 bits, not W{weight_bits}A{act_bits}",
                          hint="use W8A8 or W4A4 with this baseline")
    out_path = Path(out_path)

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calib_batches)

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {"input": batch.numpy().astype(np.float32)}

    model = model.eval()
    opset = 21 if 4 in (weight_bits, act_bits) else 17  # int4 Q/DQ need opset 21
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "float.onnx"
        with torch.no_grad():
            torch.onnx.export(model, (torch.zeros(1, *input_shape),), str(float_path), input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=opset, dynamo=False)
        root = logging.getLogger()
        level = root.level
        try:
            with atomic_path(out_path) as partial:
                root.setLevel(logging.ERROR)  # ORT logs a pre-processing suggestion on the root logger every call
                quantize_static(str(float_path), str(partial), _Reader(), quant_format=QuantFormat.QDQ,
                                per_channel=per_channel, activation_type=getattr(QuantType, _TYPES[act_bits][1]),
                                weight_type=getattr(QuantType, _TYPES[weight_bits][0]),
                                calibrate_method=CalibrationMethod.MinMax)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - ORT raises plain exceptions; name the step that failed
            raise ExportError(f"onnxruntime quantize_static failed: {e}") from e
        finally:
            root.setLevel(level)
    return out_path
