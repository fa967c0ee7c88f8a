"""The reference with a runtime's own rounding ties: legal ties explain the runtime; anything else does not."""

import numpy as np
import onnx
import pytest
import torch

from dfq_deploy.data.eval_set import EvalSet
from dfq_deploy.export import export_onnx
from dfq_deploy.quant import QuantScheme, calibrate, quantize_model
from dfq_deploy.validate.gate import Gate, _tie_bound
from dfq_deploy.validate.local import activation_chains, sub_output, torch_run
from dfq_deploy.validate.parity import compare_logits
from dfq_deploy.validate.replay import replayed_logits


class _OtherRounding:
    """A stand-in runtime (``session(model, optimize)`` and ``run``): the student itself, except that activation
    ``k`` moves one step where ``moved(activation)`` says, ties (a legal rounding) or not (a fault)."""

    def __init__(self, q, model: onnx.ModelProto, k: int, moved):
        self.q, self.k, self.moved = q, k, moved
        self.chains = activation_chains(model)
        self.logits_name = model.graph.output[0].name
        self.count = 0

    def __call__(self, model, optimize):
        return self

    def trajectory(self, x):
        acts, _ = torch_run(self.q, x)
        a = acts[self.k]
        mask = self.moved(a)
        codes = np.round(a.value / a.step)
        up = np.where(codes < a.int_range[1], 1.0, -1.0)  # stay inside the quantizer's range
        self.count += int(mask.sum())
        return torch_run(self.q, x, {self.k: np.where(mask, a.value + up * a.step, a.value).astype(np.float32)})

    def run(self, names, feeds):
        acts, logits = self.trajectory(next(iter(feeds.values())))
        by_name = {sub_output(c): (a.value if sub_output(c) != c.codes else c.quantize(a.value))
                   for c, a in zip(self.chains, acts)}
        return [logits if n == self.logits_name else by_name[n] for n in names]

    def logits(self, x):
        self.count = 0
        out = self.trajectory(x)[1]
        self.count_once = self.count
        self.count = 0
        return out


def _ties(a):
    return a.at_tie


def _not_ties(a):
    every = (np.arange(a.value[0].size) % 97 == 0).reshape(a.value.shape[1:])  # the same in every image
    return every & ~a.at_tie & (a.value > 0)  # a few elements nowhere near a half-step


K = 1  # the activation the stand-in runtime rounds its own way: an early one, so its choices propagate


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small student whose logits are nearly tied (classifier rows alike), so one-step changes move its top-1:
    what the gate meets in random networks fed noise."""
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    with torch.no_grad():
        net[-1].weight.copy_(net[-1].weight[:1].repeat(10, 1) + 0.02 * torch.randn(10, 8))
        net[-1].bias.zero_()
    q = quantize_model(net.eval(), QuantScheme.from_tag("W4A4"))
    calibrate(q, [torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))])
    q.eval()
    path = tmp_path_factory.mktemp("replay") / "m.onnx"
    export_onnx(q, path, (1, 28, 28))
    x = torch.randn(96, 1, 28, 28, generator=torch.Generator().manual_seed(3)).numpy()
    return q, onnx.load(path), x, torch_run(q, x)[1]


def test_a_runtimes_ties_replayed_give_its_logits(setup):
    q, model, x, reference = setup
    fake = _OtherRounding(q, model, K, _ties)
    runtime = fake.logits(x)
    assert fake.count_once > 0 and not np.array_equal(runtime, reference)
    found = replayed_logits(model, x, q, runtime, fake, batch_size=32)
    assert found is not None and found.stopped_at is None
    assert found.elements == fake.count_once
    assert found.activations == {torch_run(q, x[:1])[0][K].module: fake.count_once}
    np.testing.assert_array_equal(found.logits, runtime)


def test_a_difference_that_is_no_tie_is_not_replayed(setup):
    q, model, x, reference = setup
    fake = _OtherRounding(q, model, K, _not_ties)
    runtime = fake.logits(x)
    found = replayed_logits(model, x, q, runtime, fake, batch_size=32)
    assert found.stopped_at == torch_run(q, x[:1])[0][K].module and found.elements == 0
    np.testing.assert_array_equal(found.logits, reference)  # nothing replayed: the reference as it is


def test_a_run_whose_exposed_logits_are_other_says_nothing(setup):
    q, model, x, _ = setup
    fake = _OtherRounding(q, model, K, _ties)
    assert replayed_logits(model, x, q, fake.logits(x) + 1.0, fake) is None


@pytest.mark.parametrize("moved, passes", [(_ties, True), (_not_ties, False)], ids=["ties", "fault"])
def test_the_gate_holds_a_runtime_to_its_replayed_ties_only_when_they_explain_it(setup, moved, passes):
    """A runtime that rounds the ties of an early activation its own way moves the top-1 of a random network fed
    noise: the replayed reference shows that rounding did it, and the row passes. One step off elsewhere (a fault
    that the layer-local check might allow in few elements) moves it as well, and the row keeps failing."""
    q, model, x, reference = setup
    fake = _OtherRounding(q, model, K, moved)
    runtime = fake.logits(x)
    gate = Gate()
    rows = {"onnxruntime": compare_logits(reference, runtime, None, runtime="onnxruntime", reference_name="torch",
                                          min_agreement=gate.min_agreement)}
    assert not rows["onnxruntime"]  # the setup moves enough top-1s to fail the plain thresholds
    data = EvalSet(torch.from_numpy(x), torch.full((len(x),), -1), [], "noise")
    summary = _tie_bound(rows, model, data, q, reference, runtime, None, "torch", gate, fake)
    assert summary["explains"] is passes
    assert bool(rows["onnxruntime"]) is passes
    if passes:
        assert "rounding tie" in rows["onnxruntime"].rounding_source
        assert rows["onnxruntime"].rounding_baseline == summary["agreement_with_reference"] < gate.min_agreement


def test_onnx_runtime_with_its_activations_exposed_computes_the_run_it_judges(setup):
    """The real path: the exposed graph in ONNX Runtime gives the plain session's logits (else the replay would say
    nothing), and on this exact export nothing is left to replay but ties."""
    from dfq_deploy.ort_session import ort_session

    q, model, x, reference = setup
    plain = ort_session(model, optimize=True, threads=1)
    runtime = plain.run(None, {plain.get_inputs()[0].name: x})[0]
    found = replayed_logits(model, x, q, runtime, lambda m, optimize: ort_session(m, optimize=optimize, threads=1))
    assert found is not None and found.stopped_at is None
    assert (found.logits.argmax(1) == runtime.argmax(1)).all()
