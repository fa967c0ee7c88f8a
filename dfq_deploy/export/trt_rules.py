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

from .graph import Graph, attr, input_name

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
    if _opset(model) < 13:
        out.violations.append(Violation("opset", "model", f"opset {_opset(model)} < 13: per-channel Q/DQ needs "
                                        "opset 13"))
    for n in G.g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            out.violations += _scale_and_zero_point(G, n)
        if n.op_type == "QuantizeLinear":
            out.qdq_pairs += 1
            out.violations += _integer_readers(G, n)
        if n.op_type == "DequantizeLinear":
            out.violations += _dequantized_input(G, n)
        if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            found = _quantized_compute(G, n)
            if not any(v.rule == "quantized-compute" for v in found):
                out.quantized_compute.append(_name(n))
            out.violations += found
        if n.op_type == "Add":
            out.violations += _residual_add(G, n)
    return out


def _name(n: onnx.NodeProto) -> str:
    return n.name or n.output[0]


def _scale_and_zero_point(G: Graph, n: onnx.NodeProto) -> list[Violation]:
    """A Q or DQ: a positive finite float scale and a constant signed int8 zero point of 0."""
    bad = []
    scale = G.const(n.input[1])
    if scale is None:
        bad.append(Violation("constant-scale", _name(n), "scale is not a constant"))
    elif not (np.all(np.isfinite(scale)) and np.all(scale > 0)) or scale.dtype not in (np.float32, np.float16):
        bad.append(Violation("scale", _name(n), f"scale must be positive finite float32/16, got {scale.dtype}"))
    if input_name(n, 2) is None:
        if n.op_type == "QuantizeLinear":  # no zero point means uint8 output in ONNX
            bad.append(Violation("int8-only", _name(n), "no zero point: the output is uint8; give an int8 zero point"))
        return bad
    zp = G.const(n.input[2])
    if zp is None:
        bad.append(Violation("zero-point", _name(n), "zero point is not a constant"))
    elif not (n.op_type == "DequantizeLinear" and zp.dtype == np.int32):  # int32 bias: _dequantized_input's
        if zp.dtype != np.int8:
            bad.append(Violation("int8-only", _name(n), f"{zp.dtype} quantization; TensorRT takes signed int8 inside "
                                 "the network"))
        if np.any(zp != 0):
            bad.append(Violation("zero-point", _name(n), "non-zero zero point; TensorRT takes symmetric only"))
    return bad


def _integer_readers(G: Graph, q: onnx.NodeProto) -> list[Violation]:
    """Only DequantizeLinear may read a QuantizeLinear's integer output."""
    return [Violation("integer-op", _name(user), f"{user.op_type} reads the integer output of {_name(q)}; only "
                      "DequantizeLinear may (move a Clip before QuantizeLinear as a float Clip)")
            for user in G.consumers.get(q.output[0], []) if user.op_type != "DequantizeLinear"]


def _dequantized_input(G: Graph, dq: onnx.NodeProto) -> list[Violation]:
    """A DQ reads a QuantizeLinear or a constant, never an int32 constant (a quantized bias)."""
    const = G.const(dq.input[0])
    if const is not None and const.dtype == np.int32:
        return [Violation("int32-bias", _name(dq), "DequantizeLinear of an int32 constant (quantized bias); "
                          "TensorRT takes a float bias")]
    if const is None:
        src = G.producer.get(dq.input[0])
        if src is None or src.op_type != "QuantizeLinear":
            kind = "a graph input" if src is None else src.op_type
            return [Violation("dq-input", _name(dq), f"reads {kind}, not a QuantizeLinear or constant")]
    return []


def _quantized_compute(G: Graph, n: onnx.NodeProto) -> list[Violation]:
    """A Conv/Gemm/MatMul reads a dequantized input and weight (else it runs in float), the weight's scales on the
    output-channel axis."""
    x_dq, w_dq = G.produced_by(n.input[0], "DequantizeLinear"), G.produced_by(n.input[1], "DequantizeLinear")
    if x_dq is None or w_dq is None:
        which = "input" if x_dq is None else "weight"
        return [Violation("quantized-compute", _name(n), f"{n.op_type} {which} is not dequantized: it runs in float")]
    scale = G.const(w_dq.input[1])
    if scale is None or scale.size <= 1:
        return []
    if n.op_type in COMPUTE_WEIGHT_AXIS:
        want = COMPUTE_WEIGHT_AXIS[n.op_type]
    elif n.op_type == "Gemm":
        want = 0 if attr(n, "transB", 0) else 1
    else:
        want = -1
    w_q = G.produced_by(w_dq.input[0], "QuantizeLinear")
    w = G.const(w_q.input[0]) if w_q is not None else G.const(w_dq.input[0])
    ndim = w.ndim if w is not None else 2
    if attr(w_dq, "axis", 1) % ndim != want % ndim:
        return [Violation("per-channel-axis", _name(n), f"weight scales on axis {attr(w_dq, 'axis', 1)}, TensorRT "
                          f"wants the output-channel axis {want % ndim}")]
    return []


def _residual_add(G: Graph, n: onnx.NodeProto) -> list[Violation]:
    """An Add of two computed tensors has both dequantized or neither (else it runs in float)."""
    def from_dq(tensor: str) -> bool:
        return G.produced_by(tensor, "DequantizeLinear") is not None

    dynamic = [i for i in n.input if not G.is_const(i)]
    if len(dynamic) == 2 and any(from_dq(i) for i in dynamic) and not all(from_dq(i) for i in dynamic):
        return [Violation("residual-add", _name(n), "only one input is dequantized: Q/DQ both inputs or the Add "
                          "runs in float (TensorRT #1992)")]
    return []
