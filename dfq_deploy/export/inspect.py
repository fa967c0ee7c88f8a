"""What ONNX Runtime really executes: load a model with optimisation level ALL and read the optimised graph."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx

COMPUTE_OPS = {"Conv", "Gemm", "MatMul", "ConvTranspose"}
INTEGER_COMPUTE_OPS = {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat",
                       "DynamicQuantizeMatMul"}


@dataclass
class KernelCensus:
    """Op counts of the graph ONNX Runtime runs after optimisation.

    ``integer_compute`` counts Conv/Gemm/MatMul that became integer kernels; ``float_compute`` names those left float.
    """

    op_counts: dict[str, int]
    integer_compute: int
    float_compute: list[str] = field(default_factory=list)

    @property
    def all_integer(self) -> bool:
        return self.integer_compute > 0 and not self.float_compute

    def to_dict(self) -> dict:
        return {"op_counts": self.op_counts, "integer_compute": self.integer_compute,
                "float_compute": self.float_compute, "all_integer": self.all_integer}


def ort_kernel_census(onnx_path: str | Path) -> KernelCensus:
    """Optimise ``onnx_path`` with ONNX Runtime (CPU, level ALL) and count integer vs float compute kernels."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opt_path = str(Path(tmp) / "optimized.onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = opt_path
        so.log_severity_level = 3  # the "hardware specific optimised model" warning is expected here
        ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        graph = onnx.load(opt_path).graph
    ops = Counter(n.op_type for n in graph.node)
    integer = sum(ops[o] for o in INTEGER_COMPUTE_OPS)
    floats = [n.name or n.output[0] for n in graph.node if n.op_type in COMPUTE_OPS]
    return KernelCensus(dict(sorted(ops.items())), integer, floats)


def output_quant_step(onnx_path: str | Path) -> float | None:
    """Scale of the DequantizeLinear that produces the first graph output (None when the output is not quantized)."""
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    out = model.graph.output[0].name
    producer = {o: n for n in model.graph.node for o in n.output}
    node = producer.get(out)
    # walk back through shape-only ops (the logits may be reshaped after dequantization)
    while node is not None and node.op_type in ("Reshape", "Flatten", "Identity", "Squeeze"):
        node = producer.get(node.input[0])
    if node is None or node.op_type != "DequantizeLinear":
        return None
    inits = {t.name: t for t in model.graph.initializer}
    name = node.input[1]
    if name in inits:
        return float(numpy_helper.to_array(inits[name]).reshape(-1)[0])
    src = producer.get(name)
    if src is not None and src.op_type == "Constant":
        return float(numpy_helper.to_array(src.attribute[0].t).reshape(-1)[0])
    return None
