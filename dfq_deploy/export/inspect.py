"""What ONNX Runtime really executes: load a model with optimisation level ALL and read the optimised graph."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ..ort_session import ort_session
from .graph import Graph

# float compute as ONNX Runtime may rewrite it (Conv+activation fuses into com.microsoft FusedConv, etc.)
COMPUTE_OPS = {"Conv", "Gemm", "MatMul", "ConvTranspose", "FusedConv", "FusedGemm", "FusedMatMul", "NhwcFusedConv"}
INTEGER_COMPUTE_OPS = {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat",
                       "DynamicQuantizeMatMul"}
INTEGER_ADD_OPS = {"QLinearAdd"}


@dataclass
class KernelCensus:
    """Op counts of the graph ONNX Runtime runs after optimisation.

    ``integer_compute`` counts Conv/Gemm/MatMul that became integer kernels; ``float_compute`` names those left float.
    """

    op_counts: dict[str, int]
    integer_compute: int
    float_compute: list[str] = field(default_factory=list)
    integer_nodes: list[str] = field(default_factory=list)   # names of the integer Conv/Gemm/MatMul/Add kernels
    float_adds: list[str] = field(default_factory=list)      # element-wise Adds left in float

    @property
    def all_integer(self) -> bool:
        return self.integer_compute > 0 and not self.float_compute

    def to_dict(self) -> dict:
        return {"op_counts": self.op_counts, "integer_compute": self.integer_compute,
                "float_compute": self.float_compute, "all_integer": self.all_integer,
                "integer_nodes": self.integer_nodes, "float_adds": self.float_adds}


def ort_kernel_census(onnx_path: str | Path) -> KernelCensus:
    """Optimise ``onnx_path`` with ONNX Runtime (CPU, level ALL) and count integer vs float compute kernels."""
    with tempfile.TemporaryDirectory() as tmp:
        opt_path = str(Path(tmp) / "optimized.onnx")
        ort_session(onnx_path, optimized_model_path=opt_path)
        graph = onnx.load(opt_path).graph
    ops = Counter(n.op_type for n in graph.node)
    integer = sum(ops[o] for o in INTEGER_COMPUTE_OPS)
    floats = [n.name or n.output[0] for n in graph.node if n.op_type in COMPUTE_OPS]
    ints = [f"{n.op_type} {n.name or n.output[0]}" for n in graph.node
            if n.op_type in INTEGER_COMPUTE_OPS | INTEGER_ADD_OPS]
    consts = {t.name for t in graph.initializer}
    float_adds = [n.name or n.output[0] for n in graph.node
                  if n.op_type == "Add" and not any(i in consts for i in n.input)]
    return KernelCensus(dict(sorted(ops.items())), integer, floats, ints, float_adds)


def layer_bits(model: onnx.ModelProto) -> dict[str, dict[str, int]]:
    """Weight and input-activation bits of every Conv/Gemm/MatMul of a QCDQ graph, read from the graph itself.

    The bits of a chain are those of its integer range: the Clip bounds when there is a Clip (Brevitas adds one
    below 8 bits), else the Q/DQ integer type. ``{node name: {"weight": b, "input": b}}``; 0 = float.
    """
    import math

    import numpy as np

    G = Graph(model)

    def bits(tensor: str) -> int:
        dq = G.produced_by(tensor, "DequantizeLinear")
        if dq is None:
            return 0
        clip, _ = G.dq_source(dq, through_pad=True)  # the onnxruntime profile's channel padding
        if clip is not None:
            lo, hi = int(G.const(clip.input[1])), int(G.const(clip.input[2]))
        else:
            zp = G.const_input(dq, 2, np.zeros((), np.uint8))
            if zp is None or zp.dtype.kind not in "iu":
                return 0
            info = np.iinfo(zp.dtype)
            lo, hi = int(info.min), int(info.max)
        levels = hi - lo + 1
        if lo < 0 and hi == -lo:  # narrow symmetric range [-(2^(b-1)-1), 2^(b-1)-1]
            levels += 1
        return max(1, math.ceil(math.log2(levels)))

    return {n.name or n.output[0]: {"weight": bits(n.input[1]), "input": bits(n.input[0])}
            for n in G.g.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")}


def output_quant_step(onnx_path: str | Path) -> float | None:
    """Scale of the DequantizeLinear that produces the first graph output (None when the output is not quantized)."""
    G = Graph(onnx.load(str(onnx_path)))
    node = G.producer.get(G.g.output[0].name)
    # walk back through shape-only ops (the logits may be reshaped after dequantization)
    while node is not None and node.op_type in ("Reshape", "Flatten", "Identity", "Squeeze"):
        node = G.producer.get(node.input[0])
    if node is None or node.op_type != "DequantizeLinear":
        return None
    scale = G.const(node.input[1])
    return None if scale is None else float(scale.reshape(-1)[0])
