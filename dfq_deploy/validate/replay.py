"""The reference with a runtime's own rounding ties: how far legal ties move the top-1 on these inputs.

The layer-local check (:mod:`.local`) allows one step wherever the reference's unrounded value sits at a half-step:
a runtime that sums exactly in integers and a reference that sums in float32 may round such an element to either
neighbour, and both are right. On most models that is invisible end to end. On a network whose logits are nearly
tied (random weights fed noise, a deep chaotic stack) a few such elements early in the network can move many top-1s,
and then end-to-end agreement measures the ties, not the export.

This module measures that directly instead of through a proxy: it runs the runtime with every quantized activation
exposed, finds the first activation (in the reference's call order) where the runtime's values differ from the
reference's, checks that every differing element there is a tie of at most one step (the inputs to it being the
same on both sides), and makes the reference output the runtime's values at that activation. The rest of the
reference then computes from them, and the next first difference is taken, up to ``MAX_ROUNDS`` per batch. The
logits that come out are the reference's own function evaluated with the runtime's choices at ties: a legal
rounding of the same model. Where a difference is not such a tie, replaying stops there (the export may be wrong
at that activation, and the layer-local check is what judges it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from ..export.graph import broadcast
from .local import activation_chains, images_per_pass, sub_output, torch_run

# first differences replayed per batch: each costs one more reference pass with its activations recorded
MAX_ROUNDS = 8


@dataclass
class TieReplay:
    """The reference's logits with the runtime's rounding ties replayed (:mod:`module docstring <.replay>`)."""

    logits: np.ndarray
    elements: int = 0                                   # tie elements replayed, over all batches
    activations: dict[str, int] = field(default_factory=dict)  # module -> elements replayed there
    stopped_at: str | None = None   # the first activation where a difference was not a tie (replaying stopped)

    def describe(self, runtime: str) -> str:
        where = ", ".join(sorted(self.activations, key=self.activations.get, reverse=True)[:3])
        return (f"its own evaluation with {runtime}'s choice at {self.elements} rounding tie(s) "
                f"({len(self.activations)} activation(s): {where})")

    def to_dict(self) -> dict:
        return {"elements": self.elements, "activations": dict(self.activations), "stopped_at": self.stopped_at}


def replayed_logits(model: onnx.ModelProto, x: np.ndarray, qmodel, runtime_logits: np.ndarray, session,
                    batch_size: int = 64) -> TieReplay | None:
    """The reference ``qmodel``'s logits on ``x`` with the runtime's rounding ties replayed.

    ``session(model, optimize)`` builds the runtime's session of a graph (as for the layer-local check); the graph run
    here is ``model`` with every quantized activation also an output. Returns None where that run's logits are not
    ``runtime_logits`` (exposing the activations changed what the runtime computes, so its values say nothing of the
    run being judged) or the graph and the reference do not have the same activations."""
    chains = activation_chains(model)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    logits_name = exposed.graph.output[0].name
    outputs = [sub_output(c) for c in chains]
    fetch = [name for name in dict.fromkeys(outputs) if name != logits_name]  # the logits' chain: fetched once
    have = {o.name for o in exposed.graph.output}
    for name in fetch:
        if name not in have:
            exposed.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = session(exposed, True)
    input_name = model.graph.input[0].name
    result = TieReplay(np.zeros_like(runtime_logits, dtype=np.float32))
    first, _ = torch_run(qmodel, x[:1])
    if len(first) != len(chains):
        return None
    batch = images_per_pass(first, batch_size, copies=2)  # every activation on both sides
    for lo in range(0, int(x.shape[0]), batch):
        xb = x[lo:lo + batch]
        got = sess.run([logits_name, *fetch], {input_name: xb})
        if not np.array_equal(got[0], runtime_logits[lo:lo + batch]):
            return None
        by_name = {logits_name: got[0], **dict(zip(fetch, got[1:], strict=True))}
        values = [by_name[name].astype(np.float64) if name != c.codes else c.dequantize(by_name[name])
                  for c, name in zip(chains, outputs, strict=True)]
        result.logits[lo:lo + batch] = _replay_batch(qmodel, xb, chains, values, result)
    return result


def _replay_batch(qmodel, xb: np.ndarray, chains, values: list[np.ndarray], result: TieReplay) -> np.ndarray:
    replace: dict[int, np.ndarray] = {}
    acts, logits = torch_run(qmodel, xb)
    for _ in range(MAX_ROUNDS):
        k, ties = _first_difference(acts, chains, values)
        if k is None:
            break
        if ties is None:  # not a tie of one step: nothing here is rounding, so replay no further
            result.stopped_at = result.stopped_at or acts[k].module
            break
        replace[k] = values[k].astype(np.float32)
        result.elements += ties
        result.activations[acts[k].module] = result.activations.get(acts[k].module, 0) + ties
        acts, logits = torch_run(qmodel, xb, replace)
    return logits


def _first_difference(acts, chains, values) -> tuple[int | None, int | None]:
    """(index of the first activation whose runtime values differ from the reference's, how many elements differ
    there, each a tie of at most one step; None when any is not)."""
    for k, (a, c, v) in enumerate(zip(acts, chains, values, strict=True)):
        if v.shape != a.value.shape:
            return k, None
        step = broadcast(np.asarray(a.step, np.float64), v.ndim, c.axis)
        steps = np.abs(v - a.value.astype(np.float64)) / step
        differ = steps > 0.5
        if not differ.any():
            continue
        at_tie = a.at_tie if a.at_tie is not None else np.zeros_like(differ)
        if steps.max() > 1.0 + 1e-3 or not at_tie[differ].all():
            return k, None
        return k, int(differ.sum())
    return None, None
