"""Inference speed of what dfq-deploy ships against what a user would run instead (issue 14).

    .venv/bin/python benchmarks/speed.py [--models resnet20,resnet18] [--batches 1,64,256] [--threads 1,2] \\
        [--rounds 7] [--out benchmarks/results/speed.json]
    .venv/bin/python benchmarks/speed.py --table

Per model, five variants of the same network:

- ``torch-fp32``: the float model in PyTorch (eager, ``inference_mode``);
- ``ort-fp32``: the float model exported to ONNX, ONNX Runtime CPU, optimisation level ALL (the baseline of the
  ratios);
- ``ort-quantize_static-int8``: ONNX Runtime's own ``quantize_static`` (QDQ, per-channel int8 weights, uint8
  activations, MinMax calibration): what a user without dfq-deploy would pick;
- ``dfq-W8A8`` and ``dfq-W4A4``: dfq-deploy's onnxruntime-profile exports (first and last layer 8-bit).

Speed does not depend on the weights' values, so the quantized variants are calibrated on a few random batches, not
trained. Models: the shipped ResNet-20 (1x28x28) and torchvision's ResNet-18 at 3x224x224 (random weights).

Timing: for each (model, threads, batch), every variant's session is built and warmed up, then ``--rounds`` rounds
run each variant once per round, interleaved (so a slow spell of the machine hits every variant alike); a
variant's time is its median. Idle thread pools sleep instead of spinning (OpenMP ``PASSIVE``, ONNX Runtime
``allow_spinning=0``), so one variant's idle threads do not take cores from the next. Ratios are taken within
the same cell. A cell's result is written to ``--out`` as soon as it is measured and skipped when found there, so
an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

# Idle threads must sleep, not spin: the variants run interleaved in one process, and a thread pool still spinning
# after its own run (OpenMP's default wait policy, ONNX Runtime's default) steals a core from the next variant on a
# 2-core machine. Measured before this: W8A8 at batch 64 took 42 ms with 2 threads against 26 ms with 1.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

warnings.filterwarnings("ignore")

VARIANTS = ("torch-fp32", "ort-fp32", "ort-quantize_static-int8", "dfq-W8A8", "dfq-W4A4")
MODELS = {"resnet20": ("shipped teacher", (1, 28, 28)), "resnet18": ("torchvision:resnet18", (3, 224, 224))}


def _float_model(name: str):
    import torch

    from dfq_deploy.models import build_model, load_teacher

    if name == "resnet20":
        return load_teacher()[0].eval()
    torch.manual_seed(0)
    return build_model("torchvision:resnet18", num_classes=1000).eval()


def build_variants(name: str, work: Path) -> dict[str, Path | object]:
    """Variant name -> ONNX path (or the torch module for ``torch-fp32``), built once per model in ``work``."""
    import torch

    from dfq_deploy.export import export_onnx
    from dfq_deploy.export.ort_quantize import ort_quantize_static
    from dfq_deploy.quant import QuantScheme, calibrate, quantize_model

    model = _float_model(name)
    shape = MODELS[name][1]
    calib = [torch.randn(8, *shape, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    out: dict[str, Path | object] = {"torch-fp32": model}
    fp = work / f"{name}-fp32.onnx"
    if not fp.exists():
        with torch.no_grad():
            torch.onnx.export(model, (torch.zeros(1, *shape),), str(fp), input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=17, dynamo=False)
    out["ort-fp32"] = fp
    qs = work / f"{name}-quantize_static.onnx"
    if not qs.exists():
        ort_quantize_static(model, qs, shape, calib)
    out["ort-quantize_static-int8"] = qs
    for tag in ("W8A8", "W4A4"):
        path = work / f"{name}-dfq-{tag}.onnx"
        if not path.exists():
            q = quantize_model(model, QuantScheme.from_tag(tag))
            calibrate(q, calib)
            export_onnx(q.eval(), path, shape, profile="onnxruntime")
        out[f"dfq-{tag}"] = path
    return out


def _runner(variant: str, target, threads: int):
    """A callable running one batch, and its teardown."""
    import torch

    if variant == "torch-fp32":
        def run(x):
            with torch.inference_mode():
                target(torch.from_numpy(x))
        return run
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see OMP_WAIT_POLICY above
    sess = ort.InferenceSession(str(target), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


def measure_cell(variants: dict, shape, threads: int, batch: int, rounds: int) -> dict:
    """Median seconds per batch of every variant, interleaved rounds (see the module docstring)."""
    import torch

    torch.set_num_threads(threads)
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    runners = {v: _runner(v, t, threads) for v, t in variants.items()}
    for run in runners.values():  # warm-up: first-call allocations, kernel selection
        run(x)
        run(x)
    times: dict[str, list[float]] = {v: [] for v in runners}
    for _ in range(rounds):
        for v, run in runners.items():
            t0 = time.perf_counter()
            run(x)
            times[v].append(time.perf_counter() - t0)
    med = {v: statistics.median(ts) for v, ts in times.items()}
    return {"median_ms": {v: round(m * 1000, 3) for v, m in med.items()},
            "speedup_vs_ort_fp32": {v: round(med["ort-fp32"] / m, 3) for v, m in med.items()},
            "rounds": rounds}


def machine() -> dict:
    import onnxruntime
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet20,resnet18")
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results/speed.json")
    ap.add_argument("--work", default=None, help="folder for the ONNX files (default: a temporary one)")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"inference": {}}
    if args.table:
        print_table(results)
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="dfq-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    results["machine"] = machine()
    for name in args.models.split(","):
        variants = None
        for threads in map(int, args.threads.split(",")):
            for batch in map(int, args.batches.split(",")):
                key = f"{name}|threads={threads}|batch={batch}"
                if key in results["inference"]:
                    continue  # measured in an earlier (interrupted) run
                variants = variants or build_variants(name, work)
                t0 = time.time()
                cell = measure_cell(variants, MODELS[name][1], threads, batch, args.rounds)
                results["inference"][key] = {"model": name, "threads": threads, "batch": batch, **cell}
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(results, indent=2) + "\n")
                print(f"{key}: " + "  ".join(f"{v} {ms:.2f} ms" for v, ms in cell["median_ms"].items())
                      + f"  ({time.time() - t0:.0f} s)", flush=True)
    print_table(results)
    return 0


def print_table(results: dict) -> None:
    print("\n| model | threads | batch | " + " | ".join(VARIANTS) + " |")
    print("|---|---|---|" + "---|" * len(VARIANTS))
    for cell in results.get("inference", {}).values():
        ms, sp = cell["median_ms"], cell["speedup_vs_ort_fp32"]
        print(f"| {cell['model']} | {cell['threads']} | {cell['batch']} | "
              + " | ".join(f"{ms[v]:.2f} ms ({sp[v]:.2f}x)" for v in VARIANTS) + " |")
    print("\nms: median per batch; (x): speed relative to ONNX Runtime FP32 in the same cell (higher is faster)")


if __name__ == "__main__":
    sys.exit(main())
