"""Static check of an ONNX graph against TensorRT's explicit-quantization rules (no TensorRT needed).

The rules are those of TensorRT's ONNX parser and builder for Q/DQ networks (TensorRT developer guide, "Working
with Quantized Types"; summarised in docs/deploy.md): symmetric signed int8, zero point 0, per-channel scales on
the output-channel axis of weights, no int32-bias DequantizeLinear, no operator other than DequantizeLinear on an
integer tensor, Q/DQ on both inputs of element-wise Adds (else the Add and its neighbours run in float,
TensorRT #1992), and quantized inputs on every Conv/Gemm/MatMul (else that layer runs in float).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from .graph import Graph, attr

COMPUTE_WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}


@dataclass(frozen=True)
class Violation:
    rule: str
    node: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.node}: {self.detail}"


@dataclass
class TensorRTCheck:
    """Result of :func:`check_tensorrt_rules`; ``ok`` when no rule is broken."""

    violations: list[Violation] = field(default_factory=list)
    quantized_compute: list[str] = field(default_factory=list)
    qdq_pairs: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict:
        return {"ok": self.ok, "violations": [asdict(v) for v in self.violations],
                "quantized_compute": len(self.quantized_compute), "qdq_pairs": self.qdq_pairs}


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def check_tensorrt_rules(model: onnx.ModelProto | str) -> TensorRTCheck:
    """List every place where ``model`` breaks a TensorRT explicit-quantization rule (see module docstring)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    G = Graph(model)
    out = TensorRTCheck()
    bad = out.violations.append
    if _opset(model) < 13:
        bad(Violation("opset", "model", f"opset {_opset(model)} < 13: per-channel Q/DQ needs opset 13"))

    def name(n: onnx.NodeProto) -> str:
        return n.name or n.output[0]

    def from_dq(tensor: str) -> onnx.NodeProto | None:
        p = G.producer.get(tensor)
        return p if p is not None and p.op_type == "DequantizeLinear" else None

    for n in G.g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale = G.const(n.input[1])
            if scale is None:
                bad(Violation("constant-scale", name(n), "scale is not a constant"))
            elif not (np.all(np.isfinite(scale)) and np.all(scale > 0)) or scale.dtype not in (np.float32, np.float16):
                bad(Violation("scale", name(n), f"scale must be positive finite float32/16, got {scale.dtype}"))
            zp = G.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            if zp is None and not (len(n.input) > 2 and n.input[2]):
                if n.op_type == "QuantizeLinear":  # no zero point means uint8 output in ONNX
                    bad(Violation("int8-only", name(n), "no zero point: the output is uint8; give an int8 zero point"))
            elif zp is None:
                bad(Violation("zero-point", name(n), "zero point is not a constant"))
            elif not (n.op_type == "DequantizeLinear" and zp.dtype == np.int32):  # int32 bias: reported below
                if zp.dtype != np.int8:
                    bad(Violation("int8-only", name(n), f"{zp.dtype} quantization; TensorRT takes signed int8 inside "
                                  "the network"))
                if np.any(zp != 0):
                    bad(Violation("zero-point", name(n), "non-zero zero point; TensorRT takes symmetric only"))
        if n.op_type == "QuantizeLinear":
            out.qdq_pairs += 1
            for user in G.consumers.get(n.output[0], []):
                if user.op_type != "DequantizeLinear":
                    bad(Violation("integer-op", name(user), f"{user.op_type} reads the integer output of "
                                  f"{name(n)}; only DequantizeLinear may (move a Clip before QuantizeLinear as a "
                                  "float Clip)"))
        if n.op_type == "DequantizeLinear":
            const = G.const(n.input[0])
            if const is not None and const.dtype == np.int32:
                bad(Violation("int32-bias", name(n), "DequantizeLinear of an int32 constant (quantized bias); "
                              "TensorRT takes a float bias"))
            elif const is None:
                src = G.producer.get(n.input[0])
                if src is None or src.op_type != "QuantizeLinear":
                    kind = "a graph input" if src is None else src.op_type
                    bad(Violation("dq-input", name(n), f"reads {kind}, not a QuantizeLinear or constant"))
        if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            x_dq, w_dq = from_dq(n.input[0]), from_dq(n.input[1])
            if x_dq is None or w_dq is None:
                which = "input" if x_dq is None else "weight"
                bad(Violation("quantized-compute", name(n), f"{n.op_type} {which} is not dequantized: it runs in "
                              "float"))
                continue
            out.quantized_compute.append(name(n))
            scale = G.const(w_dq.input[1])
            if scale is not None and scale.size > 1:
                if n.op_type in COMPUTE_WEIGHT_AXIS:
                    want = COMPUTE_WEIGHT_AXIS[n.op_type]
                elif n.op_type == "Gemm":
                    want = 0 if attr(n, "transB", 0) else 1
                else:
                    want = -1
                w_q = G.producer.get(w_dq.input[0])
                w = G.const(w_q.input[0]) if w_q is not None and w_q.op_type == "QuantizeLinear" else \
                    G.const(w_dq.input[0])
                ndim = w.ndim if w is not None else 2
                if attr(w_dq, "axis", 1) % ndim != want % ndim:
                    bad(Violation("per-channel-axis", name(n), f"weight scales on axis {attr(w_dq, 'axis', 1)}, "
                                  f"TensorRT wants the output-channel axis {want % ndim}"))
        if n.op_type == "Add":
            dynamic = [i for i in n.input if not G.is_const(i)]
            if len(dynamic) == 2 and any(from_dq(i) for i in dynamic) and not all(from_dq(i) for i in dynamic):
                bad(Violation("residual-add", name(n), "only one input is dequantized: Q/DQ both inputs or the Add "
                              "runs in float (TensorRT #1992)"))
    return out
