"""dfq-deploy: data-free low-bit quantization, integer ONNX export and cross-runtime parity checks."""

__version__ = "0.1.0"
