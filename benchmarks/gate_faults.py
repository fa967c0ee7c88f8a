"""Plant each kind of export fault into real exports of the shipped ResNet-20 and run the default parity gate.

    .venv/bin/python benchmarks/gate_faults.py [--images 2000] [--out benchmarks/results/gate_faults.json]

Students: the shipped teacher quantized with ``QuantScheme(trt_compatible=True)`` and calibrated on noise (parity does
not depend on how the weights were trained), exported with both profiles. Faults (``tests/validate/faults.py``, the
same functions the tests use), each planted in the middle of the network: an activation scale 1.3x, a zero point
off by one, a missing Clip (4-bit) or Relu (8-bit, signed TensorRT form), two output channels' weight scales
swapped, a residual Add reading one input at a 1.25x scale, a Conv left in float. Reported: the gate's verdict, the
layer it names (and the layer the fault was planted in), the worst activation's error, and the end-to-end figures
(which alone would miss several of these faults).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = [  # (fault, bits, profile)
    ("none", "W4A4", "onnxruntime"), ("none", "W8A8", "tensorrt"),
    ("scale 1.3x", "W4A4", "onnxruntime"), ("scale 1.3x", "W8A8", "tensorrt"),
    ("zero point +1", "W4A4", "onnxruntime"), ("zero point +1", "W8A8", "tensorrt"),
    ("missing Clip", "W4A4", "onnxruntime"), ("missing Relu", "W8A8", "tensorrt"),
    ("swapped channel scales", "W4A4", "onnxruntime"), ("swapped channel scales", "W8A8", "tensorrt"),
    ("Add input scale 1.25x", "W4A4", "onnxruntime"), ("Add input scale 1.25x", "W8A8", "tensorrt"),
    ("float Conv", "W4A4", "onnxruntime"), ("float Conv", "W8A8", "onnxruntime"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/gate_faults.json")
    args = ap.parse_args(argv)

    from tests.validate import faults

    from dfq_deploy.data import load_eval_set
    from dfq_deploy.export import export_onnx
    from dfq_deploy.models import load_teacher
    from dfq_deploy.quant import QuantScheme, calibrate, quantize_model
    from dfq_deploy.runtimes.ort import OnnxRuntime
    from dfq_deploy.validate import Gate, check_parity, run_logits
    from dfq_deploy.runtimes.torch_ref import TorchRuntime

    plant = {"scale 1.3x": faults.plant_scale_error, "zero point +1": faults.plant_zero_point_error,
             "missing Clip": faults.plant_missing_clip, "missing Relu": faults.plant_missing_relu,
             "swapped channel scales": faults.plant_swapped_channel_scales,
             "Add input scale 1.25x": faults.plant_wrong_add_scale, "float Conv": faults.plant_float_conv}
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher, card = load_teacher()
    data = load_eval_set("fashion-mnist", card.mean, card.std, limit=args.images)
    work = Path(tempfile.mkdtemp(prefix="dfq-faults-"))
    students, rows = {}, []
    for fault, bits, profile in CASES:
        if bits not in students:
            q = quantize_model(teacher, QuantScheme.from_tag(bits, trt_compatible=True))
            calibrate(q, [torch.randn(128, *card.input_shape, generator=torch.Generator().manual_seed(i))
                          for i in range(2)])
            q.eval()
            students[bits] = (q, run_logits(TorchRuntime(q), data, progress=False))
        q, ref = students[bits]
        clean = work / f"{bits}-{profile}.onnx"
        if not clean.exists():
            export_onnx(q, clean, tuple(card.input_shape), profile=profile)
        path = work / "planted.onnx"
        shutil.copy(clean, path)
        planted_at = plant[fault](path) if fault != "none" else "-"
        out = run_logits(OnnxRuntime(path, threads=args.threads), data, progress=False)
        r = check_parity("torch", ref, {"onnxruntime": out}, data, path, Gate(), student=q, profile=profile,
                         threads=args.threads)
        first = r.layers.first_failure
        e2e = r.runtimes["onnxruntime"]
        row = {"fault": fault, "bits": bits, "profile": profile, "planted_at": planted_at,
               "gate": "pass" if r else "FAIL", "named": first.node if first else None,
               "named_module": first.module if first else None,
               "named_steps": first.max_steps if first else None, "named_share": first.mismatched if first else None,
               "named_unexplained": first.unexplained if first else None,
               "census_float": (r.census or {}).get("float_compute", []), "top1_agreement": e2e.top1_agreement,
               "accuracy_diff": e2e.accuracy_diff, "max_logit_steps": e2e.max_diff_steps,
               "failures": r.failures()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"rows": rows, "gate": Gate().to_dict(), "images": len(data)}, indent=2) + "\n")
    print_table(rows)
    return 0


def print_table(rows: list[dict]) -> None:
    print("\n| fault | bits / profile | planted at | default gate | named by the gate | end to end alone: agreement, "
          "accuracy diff, logit steps |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["named"] and r["named_share"] == 0:  # nothing moved on this data: the integer range named it
            named = f"{r['named_module']}: {r['failures'][0].split('): ', 1)[1]}"
        elif r["named"]:
            named = (f"{r['named_module']} ({r['named_steps']:g} steps, {r['named_share']:.2%} on another code, "
                     f"{r['named_unexplained']:.2%} with no tie)")
        elif r["census_float"]:
            named = f"float compute: {', '.join(r['census_float'])}"
        else:
            named = "-"
        print(f"| {r['fault']} | {r['bits']} {r['profile']} | {r['planted_at']} | **{r['gate']}** | {named} | "
              f"{r['top1_agreement']:.2f} %, {r['accuracy_diff']:.2f} pt, {r['max_logit_steps']:g} |")


if __name__ == "__main__":
    sys.exit(main())
