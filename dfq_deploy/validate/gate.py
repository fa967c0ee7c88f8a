"""The parity gate: one comparator for ``train-export`` and ``validate``, one place that raises ``ParityError``.

A runtime passes when

1. **layer by layer** (:mod:`.local`), every quantized activation it computes from the reference's own inputs is
   within ``layer_max_steps`` (one step: a rounding tie) of the reference everywhere, and on another code, where the
   reference's unrounded value is not at a half-step (so no tie explains it), in at most ``layer_max_mismatch`` of
   its elements (a fault moves values that are nowhere near a half-step);
2. **end to end** (:mod:`.parity`), top-1 agreement is at least ``min_agreement`` and the accuracy differs by at most
   ``max_accuracy_diff`` points; the logit difference in output steps is reported, and gated only on request.
   Where every layer passes and these fail, the reference is evaluated again in float64: on inputs whose top-1 the
   reference itself cannot hold through rounding (its float64 evaluation agrees with it on less than
   ``min_agreement``), the runtime is held to that float64 agreement less the same tolerance (``100 -
   min_agreement`` points), and to its accuracy difference plus ``max_accuracy_diff``. No runtime, however exact,
   can beat rounding's own agreement on such inputs; one that falls further behind fails. Where that still fails
   ONNX Runtime, the reference is evaluated once more with ONNX Runtime's own choices at rounding ties
   (:mod:`.replay`): if that explains the runtime (every difference replayed is a tie of one step, and the runtime
   agrees with the replayed reference within the gate's own thresholds), the runtime is held to the replayed
   reference's agreement with the plain one in the same way;
3. **integer census**: with the onnxruntime profile, every Conv/Gemm runs as an integer kernel in ONNX Runtime;
4. **portability**: a model exported with the portable scheme (the default; its metadata says so) has no integer
   Conv/Gemm whose 16-bit pair sums can saturate on x86 CPUs without VNNI (:mod:`dfq_deploy.export.pair_sums`), so
   it computes the same integers on every CPU. A ``--vnni-only`` export is reported, not gated.

Where a layer fails only with ONNX Runtime's integer kernels and agrees when the same layer runs as float QDQ, the
verdict names this CPU's kernels (and the CPU, :func:`dfq_deploy.isa.cpu_info`), not the export.

The defaults come from measurements (docs/validate.md, "How the defaults were chosen").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ParityError
from ..isa import cpu_info, describe
from ..ort_session import ort_session
from .local import LocalResult
from .parity import DEFAULT_MAX_ACCURACY_DIFF, DEFAULT_MIN_AGREEMENT, ParityResult, compare_logits
from .verdict import failure_message


@dataclass(frozen=True)
class Gate:
    """Thresholds of the parity gate (the same defaults for ``train-export``, ``validate`` and the Python API)."""

    min_agreement: float = DEFAULT_MIN_AGREEMENT        # end to end: top-1 agreement with the reference (%)
    max_accuracy_diff: float = DEFAULT_MAX_ACCURACY_DIFF  # end to end: |accuracy - reference accuracy| (points)
    layer_max_steps: float = 1.0       # per activation: largest difference of one element (quantization steps)
    layer_max_mismatch: float = 0.001  # per activation: largest share on another code that no rounding tie explains
    layer_samples: int = 256           # images the layer-local check runs on
    max_logit_steps: float | None = None  # optional: largest logit difference in output steps (off: ties compound)

    def __post_init__(self):
        def bad(v):
            return not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)

        if bad(self.min_agreement) or not 0 <= self.min_agreement <= 100:
            raise ConfigError(f"min_agreement={self.min_agreement!r} must be a percentage in [0, 100]",
                              hint="e.g. --min-agreement 99")
        for name in ("max_accuracy_diff", "layer_max_steps", "layer_max_mismatch"):
            v = getattr(self, name)
            if bad(v) or v < 0:
                raise ConfigError(f"{name}={v!r} must be a finite number >= 0",
                                  hint=f"e.g. --{name.replace('_', '-')} {getattr(Gate, name)}")
        if self.layer_max_mismatch > 1:
            raise ConfigError(f"layer_max_mismatch={self.layer_max_mismatch!r} is a share in [0, 1]",
                              hint="e.g. --layer-max-mismatch 0.001 (0.1 % of an activation's elements)")
        if not isinstance(self.layer_samples, int) or isinstance(self.layer_samples, bool) or self.layer_samples < 1:
            raise ConfigError(f"layer_samples={self.layer_samples!r} must be an integer >= 1",
                              hint="e.g. --layer-samples 256")
        if self.max_logit_steps is not None and (bad(self.max_logit_steps) or self.max_logit_steps < 0):
            raise ConfigError(f"max_logit_steps={self.max_logit_steps!r} must be a finite number >= 0",
                              hint="leave it unset (reported, not gated) or e.g. --max-steps 3")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GateResult:
    """Everything the gate compared; truthy when it passes (Polygraphy's habit: a result, not a raise)."""

    gate: Gate
    reference: str
    runtimes: dict[str, ParityResult]
    layers: LocalResult | None = None
    census: dict | None = None                      # KernelCensus.to_dict() when the integer census applies
    skipped: dict[str, str] = field(default_factory=dict)
    pair_sums: dict | None = None                   # PairSumCheck.to_dict() of the graph
    portable: bool | None = None                    # the scheme the model was exported with claims portability
    cpu: dict = field(default_factory=dict)         # where the runtimes ran (dfq_deploy.isa.cpu_info)
    # where end to end failed although every layer passed: the reference's top-1 agreement with itself evaluated in
    # float64 (see float64_logits)
    float64_agreement: float | None = None
    # where that did not settle it: the reference with ONNX Runtime's own rounding ties (see replay.py), with its
    # agreement with the reference and with the runtime
    tie_replay: dict | None = None
    output_step: float | None = None                # the logits' quantization step (reported as validation's own key)

    def failures(self) -> list[str]:
        """One line per reason the gate fails, the faulty layer first (empty when it passes)."""
        out = []
        if self.layers is not None and not self.layers:
            f = self.layers.first_failure
            if f is None:
                out.append("layer-local check compared no activation")
            elif not f.range_ok:
                out.append(f"layer {f.module} ({f.node}): integer range {f.code_range} in the graph where the "
                           f"quantizer has {f.expected_range} (a missing or wrong Clip)")
            else:
                line = (f"layer {f.module} ({f.node}): {f.max_steps:g} steps off, {f.unexplained:.3%} of {f.shape} "
                        f"on another code without a rounding tie (gate <= {self.gate.layer_max_steps:g} step, "
                        f"<= {self.gate.layer_max_mismatch:.3%})")
                if f.cause == "integer kernels":
                    line += (f"; the same layer as float QDQ (ONNX Runtime's graph optimisations off) agrees "
                             f"({f.float_qdq['max_steps']:g} step): the export is right and ONNX Runtime's integer "
                             f"kernels are inexact on this CPU, {describe(self.cpu)}")
                elif f.cause == "export":
                    line += "; float QDQ differs too: the export does not compute what the model computes"
                out.append(line)
        if self.portable and self.pair_sums is not None and not self.pair_sums["exact_without_vnni"]:
            names = self.pair_sums["saturating"]
            out.append(f"{len(names)} integer layer(s) of a model exported as portable can saturate a 16-bit pair sum "
                       f"on x86 CPUs without VNNI ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}; worst "
                       f"{self.pair_sums['worst_pair_sum']} > {self.pair_sums['limit']}): they would compute other "
                       f"integers there")
        if self.census is not None and not self.census["all_integer"]:
            out.append(f"float compute where an integer kernel was expected: {', '.join(self.census['float_compute'])}")
        for r in self.runtimes.values():
            out.extend(r.failures())
        return out

    def __bool__(self) -> bool:
        return not self.failures()

    def to_dict(self) -> dict:
        return {"gate": self.gate.to_dict(), "reference": self.reference,
                "runtimes": {k: v.to_dict() for k, v in self.runtimes.items()},
                "layers": None if self.layers is None else self.layers.to_dict(),
                "census": self.census, "skipped": dict(self.skipped), "pair_sums": self.pair_sums,
                "portable": self.portable, "cpu": dict(self.cpu), "float64_agreement": self.float64_agreement,
                "tie_replay": self.tie_replay, "failures": self.failures(), "passed": bool(self)}


def check_parity(reference_name: str, reference: np.ndarray, outputs: dict[str, np.ndarray], data, onnx_path: Path,
                 gate: Gate, *, student=None, profile: str | None = None, skipped: dict | None = None,
                 threads: int | None = None, progress: bool = False, emulated=None,
                 census: dict | None = None) -> GateResult:
    """The comparator: ``outputs`` (runtime name -> logits on ``data``) against ``reference``, plus the
    layer-local check of the graph (reference: ``student``, else the graph unoptimised) and the integer census.
    ``emulated``: a :class:`dfq_deploy.runtimes.emulated.EmulatedCPU` to run the layer-local check on (the outputs
    then come from the same emulated CPU), whose CPU is the one reported. ``census``: the graph's
    ``KernelCensus.to_dict()`` where the caller has it already (else it is taken here, where it applies)."""
    from ..export import ort_kernel_census
    from ..export.inspect import output_quant_step
    from ..export.load import load_onnx_safely
    from ..export.pair_sums import check_pair_sums, scheme_portable
    from .local import check_layers

    labels = data.labels.numpy() if data.labelled else None
    step = output_quant_step(onnx_path)
    rows = {name: compare_logits(reference, logits, labels, runtime=name, reference_name=reference_name,
                                 output_step=step, min_agreement=gate.min_agreement,
                                 max_accuracy_diff=gate.max_accuracy_diff, max_steps=gate.max_logit_steps,
                                 class_names=data.class_names)
            for name, logits in outputs.items()}
    # the images where a runtime is furthest from the reference first (where a fault shows most), in dataset order
    spread = max((np.abs(reference - o).max(1) for o in outputs.values()), key=lambda d: d.max(initial=0),
                 default=np.zeros(len(reference)))
    pick = np.sort(np.argsort(-spread, kind="stable")[:gate.layer_samples])
    layers = check_layers(onnx_path, data.images[pick].numpy(), student, max_steps=gate.layer_max_steps,
                          max_mismatch=gate.layer_max_mismatch, threads=threads, progress=progress,
                          session=None if emulated is None else emulated.session)
    if profile != "onnxruntime" or "onnxruntime" not in outputs:
        census = None
    elif census is None:
        census = ort_kernel_census(onnx_path).to_dict()
    model = load_onnx_safely(onnx_path)
    cpu = cpu_info() if emulated is None else {**emulated.cpu_info(), "emulated_by": f"qemu -cpu {emulated.model}"}
    stability = None
    if student is not None and layers and not all(rows.values()):
        wide = float64_logits(student, data)
        if wide is not None:
            itself = compare_logits(reference, wide, labels, runtime="float64", reference_name=reference_name)
            stability = itself.top1_agreement
            rows = {name: rounding_bound(r, itself, gate) for name, r in rows.items()}
    replay = None
    if student is not None and layers and "onnxruntime" in rows and not rows["onnxruntime"]:
        replay = _tie_bound(rows, model, data, student, reference, outputs["onnxruntime"], labels, reference_name,
                            gate, emulated.session if emulated is not None else
                            (lambda m, optimize: ort_session(m, optimize=optimize, threads=threads)))
    return GateResult(gate, reference_name, rows, layers, census, dict(skipped or {}),
                      check_pair_sums(model).to_dict(), scheme_portable(model), cpu, stability, replay, step)


def _tie_bound(rows: dict, model, data, student, reference: np.ndarray, runtime: np.ndarray, labels,
               reference_name: str, gate: Gate, session) -> dict | None:
    """Where every layer passed and ONNX Runtime still fails end to end: the reference evaluated with the runtime's
    own rounding ties (:mod:`.replay`). If that explains the runtime (no difference that is not a tie, and the
    runtime agrees with it within the gate's own thresholds), the row is held to the replayed reference's agreement
    with the plain one, as for float64; otherwise the row stands. Changes ``rows`` in place; returns what it found."""
    from .replay import replayed_logits

    found = replayed_logits(model, data.images.numpy(), student, runtime, session)
    if found is None:
        return None
    itself = compare_logits(reference, found.logits, labels, runtime="tie replay", reference_name=reference_name)
    explains = compare_logits(found.logits, runtime, labels, runtime="onnxruntime", reference_name="tie replay",
                              min_agreement=gate.min_agreement, max_accuracy_diff=gate.max_accuracy_diff)
    summary = {**found.to_dict(), "agreement_with_reference": itself.top1_agreement,
               "runtime_agreement": explains.top1_agreement, "explains": bool(explains) and found.stopped_at is None}
    if summary["explains"]:
        bound = rounding_bound(rows["onnxruntime"], itself, gate)
        if bound.rounding_baseline == itself.top1_agreement:
            rows["onnxruntime"] = replace(bound, rounding_source=found.describe("onnxruntime"))
    return summary


def float64_logits(student, data, batch_size: int = 250) -> np.ndarray | None:
    """The student's logits on ``data`` evaluated in float64: the same model, the same quantizers, other rounding
    of its float sums. None where the student does not run in float64."""
    import copy

    import torch

    try:
        wide = copy.deepcopy(student).cpu().double().eval()
        with torch.no_grad():
            return np.concatenate([wide(x.double()).float().numpy() for x, _ in data.batches(batch_size)])
    except (RuntimeError, TypeError):  # a layer without a float64 kernel
        return None


def rounding_bound(row: ParityResult, itself: ParityResult, gate: Gate) -> ParityResult:
    """``row`` held to what rounding allows on these inputs. ``itself`` compares the reference with its own float64
    evaluation: where that agrees on less than ``gate.min_agreement`` (nearly tied logits, as in a deep network with
    random weights fed noise), top-1 agreement on these inputs measures rounding, not the runtime. The runtime is
    then held to the reference's own agreement less the gate's tolerance, and to its accuracy difference plus the
    gate's; where the reference holds its top-1, the gate's thresholds stand unchanged."""
    tolerance = 100.0 - gate.min_agreement
    floor = round(max(0.0, itself.top1_agreement - tolerance), 3)
    cap = round(gate.max_accuracy_diff + (itself.accuracy_diff or 0.0), 4)
    if floor >= gate.min_agreement and cap <= gate.max_accuracy_diff:
        return row
    return replace(row, min_agreement=min(floor, gate.min_agreement),
                   max_accuracy_diff=max(cap, gate.max_accuracy_diff), rounding_baseline=itself.top1_agreement)


def raise_for_gate(report: dict, html_path: Path, hint: str) -> None:
    """Raise the ``ParityError`` of a failed report (the one place that raises it). ``hint`` is the caller's fix,
    replaced by the CPU's when the first faulty layer is exact as float QDQ and inexact only in integer kernels, or by
    the export's when a model exported as portable can saturate."""
    if not report["passed"]:
        first = (report.get("layers") or {}).get("first_failure") or {}
        pairs = report.get("pair_sums") or {}
        if first.get("cause") == "integer kernels":
            hint = ("export with the portable scheme (the default: drop --vnni-only; runs from before it: train "
                    "again), or deploy only to CPUs with VNNI / AMX")
        elif report.get("portable") and not pairs.get("exact_without_vnni", True):
            hint = "export the run again (`dfq-deploy export RUN_DIR`) with this version's portable scheme"
        raise ParityError(failure_message(report, html_path), hint=hint)
