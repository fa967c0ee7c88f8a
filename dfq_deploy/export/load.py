"""Kept for imports inside ``export``: the safe ONNX loader lives in :mod:`dfq_deploy.onnx_file` (a low layer, so the
runtimes can use it too)."""

from ..onnx_file import load_onnx_safely

__all__ = ["load_onnx_safely"]
