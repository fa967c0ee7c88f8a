"""Layer-local parity: every quantized activation the runtime computes, given the reference's own inputs to it.

Why local: two correct integer implementations break a rounding tie differently now and then (one element, one
step). End to end those single-step flips feed the next layers, compound with depth and reach the logits as several
output steps, so a gate on the logits cannot tell a tie from a bug (correct exports differ there by many output
steps). Layer by layer, with both sides fed the *same* inputs, a correct export differs by at most one step and
only on a tiny share of the elements, while a real fault (a wrong scale or zero point, a missing clamp, swapped
channel scales, a wrong residual scale) moves many elements, or some by more than a step, in the layer it is in.

How: the exported graph is cut at its activation quantizers. Every activation ``QuantizeLinear -> [Clip] ->
DequantizeLinear`` chain of the QCDQ export is one quantized activation of the Brevitas model (the export is a trace,
so the i-th chain of the graph and the i-th activation quantizer call of the forward are the same tensor). The whole
graph is *teacher-forced* (:func:`forced_model`): each chain is still computed from the graph and read out, while
the layers after it read a copy of the chain whose ``QuantizeLinear`` is fed the *reference's* value of that
activation. So every quantized activation is computed from the reference's own inputs to its layer, and by the
kernels ONNX Runtime (full optimisation) picks for the whole model: the graph keeps every node, ``Q -> DQ`` pair
and shared DQ of the deployed one, and ONNX Runtime's rewrites depend on those (in the tensorrt profile it turns
int8 pairs into uint8 and fuses the convolutions around them into QLinearConv, which a sub-graph cut around one
layer did differently). Each activation, dequantized with the chain's own DequantizeLinear parameters, is compared
with the reference's activation in the reference's quantization steps.

Where a layer differs, the same forced graph is run again without graph optimisations (each QDQ pair in float, no
integer kernel). If that agrees with the reference and the integer kernels do not, the export computes what was
trained and this CPU's integer kernels do not (:mod:`dfq_deploy.isa`: 16-bit pair sums without VNNI); the verdict
says so instead of blaming the export.

The reference is the PyTorch model (the Brevitas student), or, for a bare ``.onnx``, the same graph run unoptimised.

Ties, told apart exactly: where the two sides disagree on a code, the reference's own value *before rounding* (the
quantizer's input divided by its step) is read. Two correct implementations can only round differently where that
value sits within their float rounding error of a half-step (``TIE_TOLERANCE``); such elements are counted as ties.
The gate bounds the share of elements that differ *without* a tie to explain them, so a layer whose exact values land
on half-steps for every image (a constant channel, say) passes, while a fault, which moves values that are nowhere
near a half-step, fails. Every element must still be within one step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from tqdm.auto import tqdm

from ..errors import ModelError
from ..export.graph import Graph, attr, broadcast
from ..export.passes import REQUANT_SUFFIX
from ..ort_session import ort_session
from ..progress import leave_inner_bars

# how close to a half-step (in quantization steps) the reference's unrounded value must be for a one-step difference
# to count as a rounding tie: float32 accumulation of a few thousand products differs by far less between PyTorch and
# ONNX Runtime; a fault's displaced values fall this close to a half-step only by chance (2 x 0.05 = 10 % of them)
TIE_TOLERANCE = 0.05
# Activation values one pass of the layer-local check may hold per copy. Each pass holds every quantized
# activation of its batch several times over (the reference's values and ties, the forced feeds, the runtime's
# outputs), so at large inputs the batch, not the model, sets the peak memory; a bounded batch keeps a deep
# 224x224 model within a small machine and changes no count (the tallies add up element by element).
LOCAL_CHECK_VALUES = 32 * 2**20

_ONNX_TO_NP = {onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT8: np.int8,
               onnx.TensorProto.UINT16: np.uint16, onnx.TensorProto.INT16: np.int16}


@dataclass
class Chain:
    """One quantized activation of the graph: ``q`` -> [clip] -> ``dq``; ``codes`` names its integer tensor."""

    index: int
    q: onnx.NodeProto
    dq: onnx.NodeProto
    codes: str
    dtype: type
    low: int            # codes range (the Clip's, else the integer type's)
    high: int
    q_scale: np.ndarray
    q_zero: np.ndarray
    dq_scale: np.ndarray
    dq_zero: np.ndarray
    axis: int = 1

    @property
    def name(self) -> str:
        return self.dq.name or self.dq.output[0]

    def quantize(self, value: np.ndarray) -> np.ndarray:
        s, z = broadcast(self.q_scale, value.ndim, self.axis), broadcast(self.q_zero, value.ndim, self.axis)
        codes = np.round(value.astype(np.float64) / s) + z.astype(np.float64)
        return np.clip(codes, self.low, self.high).astype(self.dtype)

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        s, z = broadcast(self.dq_scale, codes.ndim, self.axis), broadcast(self.dq_zero, codes.ndim, self.axis)
        return (codes.astype(np.float64) - z.astype(np.float64)) * s


def activation_chains(model: onnx.ModelProto) -> list[Chain]:
    """The activation Q -> [Clip] -> DQ chains of ``model`` in graph order (weight and bias chains and the requantize
    pairs that export passes insert around grid-preserving ops are not activations of the PyTorch model)."""
    G = Graph(model)
    chains = []
    for q in G.g.node:
        if q.op_type != "QuantizeLinear" or G.is_const(q.input[0]) or q.name.endswith(REQUANT_SUFFIX):
            continue
        src = G.producer.get(q.input[0])
        if src is not None and src.op_type == "QuantizeLinear":
            continue
        # the onnxruntime profile's input-channel padding may sit between the codes and their DQ
        qdq = G.qdq_after(q, through_pad=True)
        if qdq is None or not qdq.dqs:
            continue
        clip, dq, codes = qdq.clip, qdq.dqs[0], qdq.codes
        low = G.const_input(clip, 1) if clip is not None else None
        high = G.const_input(clip, 2) if clip is not None else None
        q_zero = G.const_input(q, 2, np.array(0, np.uint8))
        dtype = q_zero.dtype.type
        info = np.iinfo(dtype)
        low, high = int(info.min if low is None else low), int(info.max if high is None else high)
        q_scale = G.const(q.input[1])
        if src is not None and src.op_type == "Clip" and q_scale is not None and q_scale.size == 1:
            # the TensorRT form clamps in float before Q (Q must feed DQ directly there): the same integer bounds
            z, sc = float(q_zero.reshape(-1)[0]), float(q_scale.reshape(-1)[0])
            for k, better in ((1, max), (2, min)):
                bound = G.const_input(src, k)
                if bound is not None and bound.size == 1:
                    code = int(np.round(float(bound.reshape(-1)[0]) / sc) + z)
                    low, high = (better(low, code), high) if k == 1 else (low, better(high, code))
        chains.append(Chain(
            index=len(chains), q=q, dq=dq, codes=codes, dtype=dtype, low=low, high=high,
            q_scale=q_scale, q_zero=q_zero, dq_scale=G.const(dq.input[1]),
            dq_zero=G.const_input(dq, 2, np.zeros((), dtype)),
            axis=int(attr(q, "axis", 1))))
    for c in chains:
        if c.q_scale is None or c.dq_scale is None:
            raise ModelError(f"activation {c.name} has a scale that is not a constant",
                             hint="validate graphs exported by dfq-deploy")
    return chains


def sub_output(chain: Chain) -> str:
    """What the check reads of a chain: its DequantizeLinear's float output where that reads the codes directly,
    else the integer codes (the onnxruntime profile's channel padding sits between them)."""
    return chain.dq.output[0] if chain.dq.input[0] == chain.codes else chain.codes


def forced_model(model: onnx.ModelProto, chains: list[Chain]) -> tuple[onnx.ModelProto, dict[str, Chain]]:
    """The whole graph, teacher-forced at every quantized activation (module docstring).

    Each chain keeps its own ``Q -> [Clip] -> DQ`` nodes, computed from the graph as before, and becomes an output
    (:func:`sub_output`); its consumers read a copy of the chain instead, ``Q -> [Clip] -> [Pad] -> DQ`` with the
    same constants, whose ``QuantizeLinear`` reads a new graph input: the reference's value of that activation.
    So every layer is computed from the reference's inputs to it, by the kernels ONNX Runtime picks for the *whole*
    model: node for node the same graph, the same ``Q -> DQ`` pairs and the same sharing of each DQ.

    Returns the model and its forced inputs (input name -> chain)."""
    forced = onnx.ModelProto()
    forced.CopyFrom(model)
    G = Graph(forced)
    graph_inputs = {v.name for v in forced.graph.input}
    copies: dict[int, list[onnx.NodeProto]] = {}   # index of a chain's Q -> its copied nodes, inserted after it
    position = {id(n): k for k, n in enumerate(forced.graph.node)}
    feeds: dict[str, Chain] = {}
    for c in chains:
        q = next(n for n in forced.graph.node if n.name == c.q.name and list(n.output) == list(c.q.output))
        if q.input[0] in graph_inputs:
            continue  # the network's input quantizer: already fed the images themselves
        copied = _forced_copy(G, q, position)
        if copied is not None:
            ref, copies[position[id(q)]] = copied
            feeds[ref] = c
    nodes = []
    for k, n in enumerate(forced.graph.node):
        nodes.append(n)
        nodes += copies.get(k, [])
    del forced.graph.node[:]
    forced.graph.node.extend(nodes)
    _forced_inputs_and_outputs(forced, chains, feeds)
    return forced, feeds


def _forced_copy(G: Graph, q: onnx.NodeProto, position: dict[int, int]) -> tuple[str, list[onnx.NodeProto]] | None:
    """The copy of the chain that ``q`` starts, ``Q -> [Clip] -> [Pad] -> DQ``, reading a new input (its name is
    returned with the copied nodes); the chain's readers are rewired to the copy. None: nothing reads the chain."""
    qdq = G.qdq_after(q, through_pad=True)
    closure = qdq.nodes if qdq is not None else [q]
    inside = {id(n) for n in closure}
    users = [u for n in closure for o in n.output for u in G.consumers.get(o, []) if id(u) not in inside]
    if not users:
        return None  # nothing reads it (the logits): no copy needed
    ref = G.fresh(q.input[0] + "_forced")
    rename = {q.input[0]: ref, **{o: G.fresh(o + "_forced") for n in closure for o in n.output}}
    copied = []
    for n in sorted(closure, key=lambda n: position[id(n)]):
        dup = onnx.NodeProto()
        dup.CopyFrom(n)
        dup.name = (n.name or n.output[0]) + "_forced"
        dup.input[:] = [rename.get(t, t) for t in n.input]
        dup.output[:] = [rename[t] for t in n.output]
        copied.append(dup)
    for u in users:
        u.input[:] = [rename.get(t, t) if t != q.input[0] else t for t in u.input]
    return ref, copied


def _forced_inputs_and_outputs(forced: onnx.ModelProto, chains: list[Chain], feeds: dict[str, Chain]) -> None:
    """The forced graph's outputs: what the check reads of each chain (:func:`sub_output`); its inputs: the images
    and one reference value per forced chain."""
    outputs = list(dict.fromkeys(sub_output(c) for c in chains))
    del forced.graph.output[:]
    for c in chains:
        t = sub_output(c)
        if t in outputs:
            elem = (onnx.TensorProto.FLOAT if t != c.codes else onnx.helper.np_dtype_to_tensor_dtype(np.dtype(c.dtype)))
            forced.graph.output.append(onnx.helper.make_tensor_value_info(t, elem, None))
            outputs.remove(t)
    for ref in feeds:
        forced.graph.input.append(onnx.helper.make_tensor_value_info(ref, onnx.TensorProto.FLOAT, None))


@dataclass
class LayerCheck:
    """One quantized activation of the runtime against the reference, both fed the reference's inputs."""

    index: int
    node: str               # the graph's DequantizeLinear of the activation
    module: str             # the PyTorch module that quantizes it (or the node name without PyTorch)
    shape: list[int]
    max_steps: float        # largest difference, in the reference's quantization steps
    mismatched: float       # share of elements on another code (more than half a step apart)
    passed: bool
    unexplained: float = 0.0  # share on another code where the reference's unrounded value is not at a half-step
    code_range: list[int] | None = None      # the graph's integer range (Clip or type bounds, minus the zero point)
    expected_range: list[int] | None = None  # the reference quantizer's (bit width, sign, narrow range)
    # a failing layer only: the same sub-graph without graph optimisations (float QDQ, no integer kernel)
    float_qdq: dict | None = None   # {"max_steps", "unexplained", "passed"}
    cause: str | None = None        # "integer kernels" (float QDQ agrees: this CPU's kernels differ) or "export"

    @property
    def range_ok(self) -> bool:
        """The graph's codes reach the quantizer's top and go no lower than its bottom (unknown: ok). A latent fault
        (a missing Clip) changes nothing until a value leaves the range, so the range itself is checked."""
        want, got = self.expected_range, self.code_range
        return want is None or (got[1] == want[1] and got[0] >= want[0])

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LocalResult:
    """Every quantized activation checked locally; truthy when each is within the thresholds."""

    runtime: str
    reference: str
    samples: int
    max_steps: float
    max_mismatch: float
    layers: list[LayerCheck] = field(default_factory=list)

    @property
    def first_failure(self) -> LayerCheck | None:
        return next((layer for layer in self.layers if not layer.passed), None)

    def __bool__(self) -> bool:
        return bool(self.layers) and self.first_failure is None

    def to_dict(self) -> dict:
        first = self.first_failure
        return {"runtime": self.runtime, "reference": self.reference, "samples": self.samples,
                "max_steps": self.max_steps, "max_mismatch": self.max_mismatch, "passed": bool(self),
                "worst_steps": max((layer.max_steps for layer in self.layers), default=0.0),
                "worst_mismatch": max((layer.mismatched for layer in self.layers), default=0.0),
                "worst_unexplained": max((layer.unexplained for layer in self.layers), default=0.0),
                "first_failure": first.to_dict() if first else None,
                "layers": [layer.to_dict() for layer in self.layers]}


@dataclass
class Activation:
    """The reference's value of one quantized activation, its quantization step and (PyTorch) its integer range."""

    module: str
    value: np.ndarray
    step: np.ndarray
    int_range: tuple[int, int] | None = None
    at_tie: np.ndarray | None = None   # where the unrounded value is within TIE_TOLERANCE of a half-step


def _at_tie(unrounded) -> np.ndarray:
    frac = unrounded - np.floor(unrounded)
    return np.abs(frac - 0.5) <= TIE_TOLERANCE


def _int_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1 - int(narrow)


def torch_activations(qmodel, x: np.ndarray) -> list[Activation]:
    """Every activation quantizer call of the Brevitas model on ``x``, in call order."""
    return torch_run(qmodel, x)[0]


def torch_run(qmodel, x: np.ndarray, replace: dict[int, np.ndarray] | None = None
              ) -> tuple[list[Activation], np.ndarray]:
    """The Brevitas model on ``x``: every activation quantizer call in call order, and the logits.

    ``replace``: call index -> the value that call outputs instead of its own (the rest of the network then computes
    from it), as recorded; its tie flags stay those of its own unrounded input."""
    import torch
    from brevitas.nn.quant_layer import QuantNonLinearActLayer

    records: list[Activation] = []
    replace = replace or {}
    hooks = []
    for name, mod in qmodel.named_modules():
        if isinstance(mod, QuantNonLinearActLayer):  # QuantIdentity, QuantReLU, QuantHardTanh, ...
            def hook(m, inp, out, name=name):  # the proxy returns a QuantTensor even where the layer does not
                if not hasattr(out, "scale") or out.scale is None:
                    return None
                rng = _int_range(int(out.bit_width), bool(out.signed), bool(getattr(m, "is_narrow_range", False)))
                x = getattr(inp[0], "value", inp[0])
                unrounded = (m.fused_activation_quant_proxy.activation_impl(x) / out.scale).detach().numpy()
                given = replace.get(len(records))
                if given is not None:
                    out = out._replace(value=torch.from_numpy(np.ascontiguousarray(given, np.float32)))
                records.append(Activation(name, out.value.detach().numpy(), out.scale.detach().numpy(), rng,
                                          _at_tie(unrounded.astype(np.float64))))
                return out if given is not None else None
            hooks.append(mod.act_quant.register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = qmodel.eval()(torch.from_numpy(x))
            logits = getattr(logits, "value", logits)  # a QuantTensor's value: the same numbers
    finally:
        for h in hooks:
            h.remove()
    return records, logits.detach().numpy()


def onnx_activations(model: onnx.ModelProto, chains: list[Chain], x: np.ndarray,
                     threads: int | None = None) -> list[Activation]:
    """The reference without PyTorch: the graph's own semantics (unoptimised, so no kernel fusion), every chain's
    codes read out and dequantized."""
    debug = onnx.ModelProto()
    debug.CopyFrom(model)
    outputs = {o.name for o in debug.graph.output}
    for c in chains:
        if c.codes not in outputs:
            debug.graph.output.append(onnx.helper.make_empty_tensor_value_info(c.codes))
    for c in chains:  # the quantizers' inputs: where each value stood before rounding
        if c.q.input[0] not in outputs:
            debug.graph.output.append(onnx.helper.make_empty_tensor_value_info(c.q.input[0]))
    sess = ort_session(debug, optimize=False, threads=threads)
    values = sess.run([c.codes for c in chains] + [c.q.input[0] for c in chains], {sess.get_inputs()[0].name: x})
    codes, pre = values[:len(chains)], values[len(chains):]
    return [Activation(c.name, c.dequantize(v), c.dq_scale, None,
                       _at_tie(p.astype(np.float64) / broadcast(c.q_scale.astype(np.float64), p.ndim, c.axis)))
            for c, v, p in zip(chains, codes, pre, strict=True)]


class _Tally:
    """Per-activation counts of one comparison (runtime vs reference) over batches."""

    def __init__(self, n: int):
        self.worst = np.zeros(n)
        self.differing = np.zeros(n, np.int64)
        self.untied = np.zeros(n, np.int64)
        self.elements = np.zeros(n, np.int64)

    def add(self, k: int, steps: np.ndarray, at_tie: np.ndarray | None) -> None:
        self.worst[k] = max(self.worst[k], float(steps.max(initial=0.0)))
        off = steps > 0.5
        self.differing[k] += int(off.sum())
        self.untied[k] += int((off & ~at_tie).sum()) if at_tie is not None else int(off.sum())
        self.elements[k] += steps.size

    def share(self, k: int) -> tuple[float, float]:
        """(share on another code, share on another code without a tie) of activation ``k``."""
        if not self.elements[k]:
            return 0.0, 0.0
        return float(self.differing[k] / self.elements[k]), float(self.untied[k] / self.elements[k])


def images_per_pass(one_image: list[Activation], most: int, copies: int = 1) -> int:
    """Images per pass of a check that holds every activation of its batch ``copies`` times over (beyond the
    several copies ``LOCAL_CHECK_VALUES`` allows for): ``most``, or fewer where ``one_image``'s activations (the
    reference's on one image) are large."""
    per_image = copies * sum(int(a.value.size) for a in one_image)
    return max(1, min(most, LOCAL_CHECK_VALUES // max(per_image, 1)))


def check_layers(onnx_path: str | Path, x: np.ndarray, qmodel=None, *, max_steps: float = 1.0,
                 max_mismatch: float = 0.001, threads: int | None = None, runtime: str = "onnxruntime",
                 batch_size: int = 32, progress: bool = False, session=None) -> LocalResult:
    """Check every quantized activation of ``onnx_path`` locally (module docstring) on the images ``x``.

    Args:
        qmodel: the Brevitas model the graph was exported from (the reference); None: the graph run unoptimised.
        max_steps: largest allowed difference of one element, in quantization steps (a tie: exactly one).
        max_mismatch: largest allowed share of an activation's elements on another code.
        batch_size: most images per pass (the reference's activations of a batch are held in memory at once;
            fewer where one image's activations are large: ``LOCAL_CHECK_VALUES``).
        session: ``session(model, optimize)`` returns an object with ``InferenceSession.run``'s signature that
            runs the teacher-forced graph (default: ONNX Runtime in this process;
            ``runtimes.emulated.EmulatedCPU.session`` runs it on an emulated CPU).

    Raises:
        ModelError: the graph does not have the PyTorch model's activation quantizers (not an export of it).
    """
    from ..export.load import load_onnx_safely

    run = _ForcedRun(load_onnx_safely(onnx_path), x, qmodel, threads, batch_size, progress, session)

    def within(tally: _Tally, k: int) -> bool:
        return round(float(tally.worst[k]), 4) <= max_steps + 1e-3 and tally.share(k)[1] <= max_mismatch

    kernels = _Tally(len(run.chains))
    run.compare(list(range(len(run.chains))), True, kernels, "layer-local parity")
    result = LocalResult(runtime, "torch" if qmodel is not None else "onnx (unoptimised reference)", int(x.shape[0]),
                         max_steps, max_mismatch)
    for c in run.chains:
        share, unexplained = kernels.share(c.index)
        z = int(np.asarray(c.q_zero).reshape(-1)[0])
        want = run.expected[c.index]
        check = LayerCheck(c.index, c.name, run.modules[c.index], run.shapes[c.index],
                           round(float(kernels.worst[c.index]), 4), share, False, unexplained,
                           [c.low - z, c.high - z], None if want is None else list(want))
        check.passed = within(kernels, c.index) and check.range_ok
        result.layers.append(check)
    differing = [layer.index for layer in result.layers if not layer.passed and layer.range_ok]
    if differing and qmodel is not None:  # the second look: is it the export, or this CPU's integer kernels?
        plain = _Tally(len(run.chains))
        run.compare(differing, False, plain, "layer-local parity, float QDQ")
        for k in differing:
            ok = within(plain, k)
            result.layers[k].float_qdq = {"max_steps": round(float(plain.worst[k]), 4),
                                          "unexplained": plain.share(k)[1], "passed": ok}
            result.layers[k].cause = "integer kernels" if ok else "export"
    return result


class _ForcedRun:
    """The teacher-forced graph of one model run batch by batch against the reference (:func:`check_layers`);
    it records each activation's shape, module and expected integer range as the reference reports them."""

    def __init__(self, model: onnx.ModelProto, x: np.ndarray, qmodel, threads: int | None, batch_size: int,
                 progress: bool, session):
        self.model, self.x, self.qmodel, self.threads = model, x, qmodel, threads
        self.batch_size, self.progress = batch_size, progress
        self.chains = activation_chains(model)
        self.input_name = model.graph.input[0].name
        self.forced, self.feeds = forced_model(model, self.chains)
        self.outputs = [o.name for o in self.forced.graph.output]
        self.shapes: list[list[int]] = [[] for _ in self.chains]
        self.modules = [c.name for c in self.chains]
        self.expected: list[tuple[int, int] | None] = [None] * len(self.chains)
        self.make = session or (lambda m, optimize: ort_session(m, optimize=optimize, threads=threads))
        self.batch_size = self._fitting(batch_size)

    def _fitting(self, most: int) -> int:
        """``most`` images per pass, or fewer where one image's activations exceed their share of
        ``LOCAL_CHECK_VALUES``: measured on the first image, as the reference reports them."""
        if self.x.shape[0] == 0:
            return most
        return images_per_pass(self.reference(self.x[:1]), most)

    def reference(self, xb: np.ndarray) -> list[Activation]:
        """The reference's activations on one batch."""
        if self.qmodel is None:
            return onnx_activations(self.model, self.chains, xb, self.threads)
        ref = torch_activations(self.qmodel, xb)
        if len(ref) != len(self.chains):
            raise ModelError(f"the graph has {len(self.chains)} quantized activations and the PyTorch model "
                             f"{len(ref)}", hint="compare a model with its own export")
        return ref

    def compare(self, which: list[int], optimize: bool, tally: _Tally, desc: str) -> None:
        """Run the forced graph (optimised or not) on every batch and tally activations ``which``."""
        sess = self.make(self.forced, optimize)
        chunks = range(0, int(self.x.shape[0]), self.batch_size)
        for lo in tqdm(chunks, desc=desc, disable=not self.progress, leave=leave_inner_bars()):
            xb = self.x[lo:lo + self.batch_size]
            ref = self.reference(xb)
            # each forced input: the reference's value on the chain's own grid, quantized again by the graph's Q
            inputs = {self.input_name: xb, **{t: c.dequantize(c.quantize(ref[c.index].value)).astype(np.float32)
                                              for t, c in self.feeds.items()}}
            got_all = dict(zip(self.outputs, sess.run(self.outputs, inputs), strict=True))
            for k in which:
                self._tally_one(k, got_all[sub_output(self.chains[k])], ref[k], tally)

    def _tally_one(self, k: int, got: np.ndarray, a: Activation, tally: _Tally) -> None:
        c = self.chains[k]
        value = got.astype(np.float64) if sub_output(c) != c.codes else c.dequantize(got)
        if tuple(got.shape) != tuple(a.value.shape):
            raise ModelError(f"quantized activation {c.index} ({c.name}) has shape {list(got.shape)} in the "
                             f"graph and {list(a.value.shape)} in the reference ({a.module})",
                             hint="compare a model with its own export")
        step = broadcast(np.asarray(a.step, np.float64), got.ndim, c.axis)
        tally.add(k, np.abs(value - a.value.astype(np.float64)) / step, a.at_tie)
        self.shapes[k] = [int(self.x.shape[0]), *got.shape[1:]]
        self.modules[k] = a.module
        self.expected[k] = a.int_range
