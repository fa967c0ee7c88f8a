"""Find the first layer where an exported graph stops agreeing with the PyTorch model it came from.

Every activation quantizer of the Brevitas model (QuantIdentity, QuantReLU, ...) becomes one activation
``QuantizeLinear -> [Clip] -> DequantizeLinear`` chain in the QCDQ export, in the same order (the export is a
trace). So the i-th quantized activation of the PyTorch forward and the i-th activation DequantizeLinear of the
graph are the same tensor; their difference divided by the quantizer's scale is the error in quantization steps.

The graph side runs on a **copy** of the model whose activation DequantizeLinear outputs are also graph outputs.
A runtime cannot fuse a Q/DQ group whose tensor is a graph output, so this copy may run fewer integer kernels than
the deployed model: it locates where the *graph* diverges (a wrong scale, a broken rewrite), and the logit-level
comparison of the deployed model stays the gate.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from ..errors import ModelError
from ..export.graph import Graph
from ..export.passes import REQUANT_SUFFIX


@dataclass
class LayerDiff:
    """One quantized activation compared in quantization steps."""

    index: int
    node: str               # the graph's DequantizeLinear
    module: str             # the PyTorch module that quantized it
    shape: list[int]
    max_steps: float
    mean_steps: float
    mismatched: float       # fraction of elements more than half a step apart

    def to_dict(self) -> dict:
        return asdict(self)


def _activation_dq_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """DequantizeLinear of each activation Q chain, in graph order (constant weight/bias chains are skipped)."""
    G = Graph(model)
    out = []
    for q in G.g.node:
        if q.op_type != "QuantizeLinear" or G.is_const(q.input[0]) or q.name.endswith(REQUANT_SUFFIX):
            continue
        src = G.producer.get(q.input[0])
        if src is not None and src.op_type == "QuantizeLinear":
            continue
        nxt = G.consumers.get(q.output[0], [])
        if len(nxt) == 1 and nxt[0].op_type == "Clip":
            nxt = G.consumers.get(nxt[0].output[0], [])
        dqs = [n for n in nxt if n.op_type == "DequantizeLinear"]
        if dqs:
            out.append(dqs[0])
    return out


def _torch_activations(qmodel: torch.nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(module name, dequantized value, scale) of every activation quantizer call, in call order."""
    from brevitas.nn.quant_layer import QuantNonLinearActLayer

    records: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    hooks = []
    for name, mod in qmodel.named_modules():
        if isinstance(mod, QuantNonLinearActLayer):  # QuantIdentity, QuantReLU, QuantHardTanh, ...
            def hook(m, inp, out, name=name):  # the proxy returns a QuantTensor even where the layer does not
                if hasattr(out, "scale") and out.scale is not None:
                    records.append((name, out.value.detach(), out.scale.detach()))
            hooks.append(mod.act_quant.register_forward_hook(hook))
    try:
        with torch.no_grad():
            qmodel.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return records


def layer_diffs(qmodel: torch.nn.Module, onnx_path: str | Path, x: np.ndarray, threads: int | None = None,
                optimization: str = "all") -> list[LayerDiff]:
    """Compare every quantized activation of ``qmodel`` with the same tensor in ``onnx_path`` run by ONNX Runtime.

    Raises:
        ModelError: the model and the graph do not have the same activation quantizers (not an export of it).
    """
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    dqs = _activation_dq_nodes(model)
    records = _torch_activations(qmodel, torch.from_numpy(x))
    if len(dqs) != len(records):
        raise ModelError(f"the graph has {len(dqs)} quantized activations and the PyTorch model {len(records)}",
                         hint="compare a model with its own export")
    graph_outputs = {o.name for o in model.graph.output}
    for d in dqs:
        if d.output[0] not in graph_outputs:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(d.output[0]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "debug.onnx"
        onnx.save(model, str(path))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimization == "all"
                                       else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        if threads:
            so.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        values = sess.run([d.output[0] for d in dqs], {sess.get_inputs()[0].name: x})
    diffs = []
    for i, (d, got, (name, ref, scale)) in enumerate(zip(dqs, values, records, strict=True)):
        ref = ref.numpy()
        if got.shape != ref.shape:
            raise ModelError(f"quantized activation {i} ({d.name}) has shape {list(got.shape)} in the graph and "
                             f"{list(ref.shape)} in PyTorch ({name})", hint="compare a model with its own export")
        steps = np.abs(got.astype(np.float64) - ref.astype(np.float64)) / float(scale.reshape(-1)[0])
        diffs.append(LayerDiff(i, d.name or d.output[0], name, list(got.shape), float(steps.max(initial=0.0)),
                               float(steps.mean()) if steps.size else 0.0, float((steps > 0.5).mean())))
    return diffs


def first_divergence(diffs: list[LayerDiff], max_steps: float = 1.0, max_mismatch: float = 0.01) -> LayerDiff | None:
    """The first compared activation that is more than ``max_steps`` steps off anywhere, or on another code in more
    than ``max_mismatch`` of its elements (None: all within).

    The second test catches faults that stay below a step where they happen (a scale 30 % off moves most codes by
    less than one step and the error grows later); rounding-tie flips between correct implementations touched at
    most 0.1 % of an activation's elements in this project's measurements (docs/benchmarks.md).
    """
    return next((d for d in diffs if d.max_steps > max_steps + 1e-3 or d.mismatched > max_mismatch), None)
