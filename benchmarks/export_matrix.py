"""Both export profiles for every model and bit width of issue 4, checked on real test images.

    .venv/bin/python benchmarks/export_matrix.py [--images 2000] [--out benchmarks/results/export_matrix.json]
    .venv/bin/python benchmarks/export_matrix.py --emulate-cpu Haswell --images 256 \
        --out benchmarks/results/export_matrix_avx2.json    # ONNX Runtime on an emulated AVX2 CPU without VNNI

For each (model, bits): a student quantized with ``QuantScheme(trt_compatible=True)`` (the scheme that deploys to
both runtimes) is exported with the onnxruntime and the tensorrt profile. Reported per export: how many
Conv/Gemm ONNX Runtime runs as integer kernels (optimisation level ALL), whether the graph passes the static
TensorRT Q/DQ rule check, how far ONNX Runtime's logits are from the PyTorch reference (output quantization steps,
top-1 agreement), the layer-local check (:mod:`dfq_deploy.validate.local`: the worst activation, in steps and in
share of elements on another code) and the **verdict of the default parity gate** (``dfq_deploy.validate.Gate()``,
what ``train-export`` and ``validate`` apply), with its reasons when it fails. With ``--emulate-cpu`` every ONNX
Runtime run (end to end and layer by layer) happens in one child process on qemu's emulated CPU (x86 hosts with
``qemu-user-static``), PyTorch natively: the same gate for a CPU this machine is not.

Models: the shipped ResNet-20 (Fashion-MNIST, 1x28x28) calibrated by noise PTQ (parity does not depend on how the
weights were trained); torchvision resnet18 and mobilenet_v2 with random weights whose BatchNorm statistics are
re-estimated on 256 training images, fed Fashion-MNIST test images resized to 56x56 and repeated to 3 channels.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")

MATRIX = [("resnet20-fmnist", b) for b in ("W8A8", "W4A4", "W3A3", "W2A2")] + \
         [(m, b) for m in ("torchvision:resnet18", "torchvision:mobilenet_v2") for b in ("W8A8", "W4A4")]


def _models(name: str, images: int):
    """(float model, input shape, calibration batches, evaluation images)."""
    import torch.nn.functional as F

    from dfq_deploy.data import load_eval_set, load_fashion_mnist
    from dfq_deploy.data.eval_set import normalize_uint8
    from dfq_deploy.models import build_model, load_teacher

    if name == "resnet20-fmnist":
        teacher, card = load_teacher()
        ev = load_eval_set("fashion-mnist", card.mean, card.std, limit=images)
        calib = [torch.randn(128, *card.input_shape, generator=torch.Generator().manual_seed(i)) for i in range(2)]
        return teacher, tuple(card.input_shape), calib, ev
    size = 56

    def prep(x):
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)

    train, _ = load_fashion_mnist("train")
    ev = load_eval_set("fashion-mnist", (0.2860,), (0.3530,), limit=images)
    fit = prep(normalize_uint8(train[:256], (0.2860,), (0.3530,)))
    torch.manual_seed(0)
    model = build_model(name, num_classes=10)
    model.train()
    with torch.no_grad():  # BN statistics of the data, as a trained model would have
        for i in range(0, len(fit), 64):
            model(fit[i:i + 64])
    return model.eval(), (3, size, size), [fit[:128], fit[128:]], replace(ev, images=prep(ev.images))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/export_matrix.json")
    ap.add_argument("--emulate-cpu", default=None, choices=["Haswell"],
                    help="run ONNX Runtime on qemu's emulated CPU (Haswell: AVX2 without VNNI)")
    args = ap.parse_args(argv)

    from dfq_deploy.export import check_tensorrt_rules, export_onnx, ort_kernel_census
    from dfq_deploy.export.inspect import output_quant_step
    from dfq_deploy.quant import QuantScheme, calibrate, quantize_model
    from dfq_deploy.runtimes.ort import OnnxRuntime
    from dfq_deploy.isa import cpu_info
    from dfq_deploy.runtimes.emulated import EmulatedCPU
    from dfq_deploy.validate import Gate, check_parity

    emulated = EmulatedCPU(args.emulate_cpu).__enter__() if args.emulate_cpu else None
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="dfq-matrix-"))
    cache: dict = {}
    for name, bits in MATRIX:
        if name not in cache:
            cache = {name: _models(name, args.images)}
        model, shape, calib, data = cache[name]
        x = data.images
        t0 = time.time()
        q = quantize_model(model, QuantScheme.from_tag(bits, trt_compatible=True))
        calibrate(q, calib)
        q.eval()
        with torch.no_grad():
            ref = torch.cat([torch.as_tensor(getattr(o, "value", o)) for o in (q(x[i:i + 250])
                                                                              for i in range(0, len(x), 250))]).numpy()
        for profile in ("onnxruntime", "tensorrt"):
            path = work / f"{name.replace(':', '_')}-{bits}-{profile}.onnx"
            export_onnx(q, path, shape, profile=profile)
            census = ort_kernel_census(path)
            if emulated is not None:
                sess = emulated.session(path)
                out = np.concatenate([sess.run([], {"input": x[i:i + 250].numpy()})[0] for i in range(0, len(x), 250)])
            else:
                with OnnxRuntime(path, threads=args.threads) as rt:
                    out = np.concatenate([rt.infer(x[i:i + 250].numpy()) for i in range(0, len(x), 250)])
            step = output_quant_step(path)
            diff = np.abs(out.astype(np.float64) - ref)
            gate = check_parity("torch", ref, {"onnxruntime": out}, data, path, Gate(), student=q, profile=profile,
                                threads=args.threads, emulated=emulated)
            row = {"model": name, "bits": bits, "profile": profile,
                   "compute_layers": census.integer_compute + len(census.float_compute),
                   "integer_layers": census.integer_compute, "trt_rules_ok": check_tensorrt_rules(str(path)).ok,
                   "max_steps": round(float(diff.max() / step), 3), "mean_steps": float(diff.mean() / step),
                   "logits_off_by_more_than_1_step": float((diff / step > 1.001).mean()),
                   "top1_agreement": float((out.argmax(1) == ref.argmax(1)).mean() * 100), "images": len(x),
                   "accuracy_diff": gate.runtimes["onnxruntime"].accuracy_diff,
                   "layer_worst_steps": max(layer.max_steps for layer in gate.layers.layers),
                   "layer_worst_mismatch": max(layer.mismatched for layer in gate.layers.layers),
                   "layer_worst_unexplained": max(layer.unexplained for layer in gate.layers.layers),
                   "layer_samples": gate.layers.samples, "gate": "pass" if gate else "FAIL",
                   "portable": gate.portable, "exact_without_vnni": gate.pair_sums["exact_without_vnni"],
                   "worst_pair_sum": gate.pair_sums["worst_pair_sum"],
                   "gate_failures": gate.failures()}
            rows.append(row)
            print(f"{name:<26} {bits} {profile:<11} int {row['integer_layers']}/{row['compute_layers']} "
                  f"trt {'ok' if row['trt_rules_ok'] else 'FAIL'}  max {row['max_steps']} steps  "
                  f"agree {row['top1_agreement']:.2f} %  layers {row['layer_worst_steps']:g} step "
                  f"{row['layer_worst_mismatch']:.4%} (no tie {row['layer_worst_unexplained']:.4%})  gate {row['gate']}  ({time.time() - t0:.0f} s)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "gate": Gate().to_dict(),
                               "machine": {"cpu": platform.processor() or platform.machine(),
                                           "cpu_info": emulated.cpu_info() if emulated else cpu_info(),
                                           "emulated_by": f"qemu -cpu {args.emulate_cpu}" if emulated else None,
                                           "torch": torch.__version__}}, indent=2) + "\n")
    if emulated is not None:
        emulated.__exit__(None, None, None)
    print_table(rows)
    return 0


def print_table(rows: list[dict]) -> None:
    print("\n| model | bits | profile | ORT integer Conv/Gemm | TensorRT rules | max logit diff (output steps, "
          "reported) | top-1 agreement | accuracy diff (pt) | layer-local worst: steps / share on another code / of "
          "those, no tie | default gate |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        verdict = r["gate"] if r["gate"] == "pass" else f"FAIL: {'; '.join(r['gate_failures'])}"
        print(f"| {r['model']} | {r['bits']} | {r['profile']} | {r['integer_layers']}/{r['compute_layers']} | "
              f"{'pass' if r['trt_rules_ok'] else 'fail'} | {r['max_steps']:g} | {r['top1_agreement']:.2f} % | "
              f"{r['accuracy_diff']:.2f} | {r['layer_worst_steps']:g} / {r['layer_worst_mismatch']:.4%} / "
              f"{r['layer_worst_unexplained']:.4%} | "
              f"**{verdict}** |")


if __name__ == "__main__":
    sys.exit(main())
