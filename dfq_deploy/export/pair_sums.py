"""Will every CPU compute the same integers? A static bound on the 16-bit pair sums of each integer Conv/Gemm.

x86 CPUs without VNNI (AVX2, and AVX-512 without VNNI) multiply uint8 activation codes by int8 weight codes with
``vpmaddubsw``, which adds each two neighbouring products in a signed 16-bit lane that saturates, before the exact
32-bit accumulation. A layer whose two products can sum past that lane gives other integers there than on VNNI / AMX
CPUs, ARM CPUs and GPUs, which accumulate in 32 bits (:mod:`dfq_deploy.isa`). The emulator shows the
AVX2 kernels; this check covers every CPU, including those no emulator here runs, from the graph alone.

Weights stored as uint8 (the onnxruntime profile's form for a layer that keeps full 8-bit weights after an 8-bit
input, ``ort_passes.unsigned_weights_where_pairs_saturate``) take ONNX Runtime's uint8 x uint8 kernels, which
widen both sides to 16-bit words and add pairs in 32 bits: exact on every CPU, whatever the codes.

The bound is taken over every pair of one output channel's weights (the kernels' packing decides which products are
neighbours, so any two may be) with each activation code anywhere in the input's integer range: what the codes can
reach, not what one data set happens to give. The codes are the ones the kernel multiplies: the activation's uint8
codes (an int8 activation is moved to uint8 by adding 128, as ONNX Runtime's x86 kernels do) and the weight codes as
stored (through their Clip).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from ..isa import PAIR_SUM_LIMIT
from .graph import Graph, attr

_PAIR_SUM_MIN = -PAIR_SUM_LIMIT - 1


@dataclass
class LayerPairSum:
    """One integer Conv/Gemm/MatMul: the code ranges it multiplies and its worst pair of products."""

    node: str
    op: str
    input_codes: list[int]     # [low, high] of the uint8 activation codes the kernel multiplies
    weight_codes: list[int]    # [low, high] of the stored weight codes
    worst_pair_sum: int | None  # the pair sum furthest from zero that any input can give (None: uint8 weights)
    exact_without_vnni: bool   # the worst pair sum fits a signed 16-bit lane (uint8 weights: always)
    weights: str = "int8"      # how the weight codes are stored: int8 (uint8 x int8 kernels) or uint8 (u8 x u8)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PairSumCheck:
    """Every integer Conv/Gemm of a graph; truthy when all of them are exact on CPUs without VNNI."""

    layers: list[LayerPairSum] = field(default_factory=list)

    @property
    def saturating(self) -> list[LayerPairSum]:
        return [layer for layer in self.layers if not layer.exact_without_vnni]

    def __bool__(self) -> bool:
        return not self.saturating

    def to_dict(self) -> dict:
        worst = max((abs(layer.worst_pair_sum) for layer in self.layers if layer.worst_pair_sum is not None),
                    default=0)
        return {"exact_without_vnni": bool(self), "limit": PAIR_SUM_LIMIT, "worst_pair_sum": worst,
                "checked": len(self.layers), "uint8_weights": sum(layer.weights == "uint8" for layer in self.layers),
                "saturating": [layer.node for layer in self.saturating],
                "layers": [layer.to_dict() for layer in self.layers]}


def _activation_codes(G: Graph, tensor: str) -> tuple[int, int] | None:
    """The uint8 code range behind the ``DequantizeLinear`` that produces ``tensor`` (None: not quantized)."""
    dq = G.produced_by(tensor, "DequantizeLinear")
    if dq is None:
        return None
    zp = G.const_input(dq, 2, np.zeros((), np.uint8))
    if zp is None or zp.dtype not in (np.uint8, np.int8):
        return None
    info = np.iinfo(zp.dtype)
    low, high = int(info.min), int(info.max)
    clip, _ = G.dq_source(dq, through_pad=True)  # the onnxruntime profile pads channels with the zero point
    if clip is not None:
        lo, hi = G.const_input(clip, 1), G.const_input(clip, 2)
        low = max(low, int(lo.reshape(-1)[0])) if lo is not None and lo.size == 1 else low
        high = min(high, int(hi.reshape(-1)[0])) if hi is not None and hi.size == 1 else high
    shift = 128 if zp.dtype == np.int8 else 0
    return low + shift, high + shift


def _weight_codes(G: Graph, tensor: str) -> tuple[np.ndarray, str] | None:
    """The integer weight codes behind the ``DequantizeLinear`` that produces ``tensor`` (through a Clip), and their
    storage type (``"int8"`` / ``"uint8"``)."""
    dq = G.produced_by(tensor, "DequantizeLinear")
    if dq is None:
        return None
    clip, src = G.dq_source(dq)
    w = G.const(src)
    if w is None or w.dtype not in (np.int8, np.uint8):
        return None
    zp = G.const_input(dq, 2, np.zeros((), w.dtype))
    if zp is None:
        return None
    w = w.astype(np.int64)
    if clip is not None:
        lo, hi = G.const_input(clip, 1), G.const_input(clip, 2)
        w = np.clip(w, None if lo is None else int(lo), None if hi is None else int(hi))
    if zp.dtype == np.uint8 and np.all(zp == 128):
        return w - 128, "uint8"  # the signed codes they stand for, as the int8 form would store them
    return w, "uint8" if zp.dtype == np.uint8 else "int8"


def worst_pair_sum(rows: np.ndarray, low: int, high: int) -> tuple[int, int]:
    """The largest and smallest sum of two products ``a_i * w_i + a_j * w_j`` over any two weights of one row of
    ``rows`` (one output channel each) and any codes ``a`` in ``[low, high]`` (``low >= 0``)."""
    rows = rows.reshape(rows.shape[0], -1).astype(np.int64)
    top = np.maximum(rows * high, rows * low)   # each product's largest value
    bottom = np.minimum(rows * high, rows * low)
    if rows.shape[1] == 1:  # a lone product pairs with padding (0)
        return int(top.max(initial=0)), int(bottom.min(initial=0))
    top2 = -np.partition(-top, 1, axis=1)[:, :2].sum(axis=1)
    bottom2 = np.partition(bottom, 1, axis=1)[:, :2].sum(axis=1)
    return int(top2.max()), int(bottom2.min())


def check_pair_sums(model: onnx.ModelProto) -> PairSumCheck:
    """Bound every quantized Conv/Gemm/MatMul's pair sums (module docstring). Layers whose input or weight is not
    quantized (float compute) are left out: they never reach an integer kernel."""
    G = Graph(model)
    result = PairSumCheck()
    for n in G.g.node:
        if n.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(n.input) < 2:
            continue
        codes = _activation_codes(G, n.input[0])
        weights = _weight_codes(G, n.input[1])
        if codes is None or weights is None:
            continue
        w, stored = weights
        if n.op_type == "Gemm" and not attr(n, "transB", 0) or n.op_type == "MatMul":
            w = w.reshape(w.shape[0], -1).T  # [K, N]: one output per column
        elif n.op_type == "ConvTranspose":
            w = np.moveaxis(w, 1, 0)  # [C_in, C_out/g, ...]: one output channel per second axis
        hi, lo = worst_pair_sum(w, *codes)
        worst = hi if hi >= -lo else lo
        exact = stored == "uint8" or (hi <= PAIR_SUM_LIMIT and lo >= _PAIR_SUM_MIN)
        worst = None if stored == "uint8" else worst
        result.layers.append(LayerPairSum(n.name or n.output[0], n.op_type, list(codes),
                                          [int(w.min(initial=0)), int(w.max(initial=0))], worst, exact, stored))
    return result


def scheme_portable(model: onnx.ModelProto) -> bool | None:
    """What the model's ``dfq_deploy.portable`` metadata claims: exported to compute the same integers on every CPU
    (None: it does not say; models from before the portable scheme, or from another tool)."""
    import json

    meta = {p.key: p.value for p in model.metadata_props}
    try:
        value = json.loads(meta.get("dfq_deploy.portable", "null"))
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, bool) else None
