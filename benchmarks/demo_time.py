"""Time the README's main job (`dfq-deploy train-export --target onnxruntime`) and print a table of its phases.

    .venv/bin/python benchmarks/demo_time.py [extra train-export options...]

Targets: the whole main job in <= 15 minutes on 2 CPU cores (issue 2), <= 10 (issue 10), <= 5 (issue 14).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# the recipe fields that set how much work a run does (whichever the recipe has)
_BUDGET_KEYS = ("calib_batches", "batch_size", "zeroq_steps", "calib_steps", "recon_iters", "recon_augment",
                "warmup_steps", "steps")


def measure(argv: list[str]) -> dict:
    """Run the main job once (extra train-export options ``argv``); its figures, as ``main`` prints them."""
    exe = shutil.which("dfq-deploy") or str(Path(sys.executable).parent / "dfq-deploy")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        t0 = time.time()
        proc = subprocess.run([exe, "train-export", "--target", "onnxruntime", "--out", str(out), "--quiet", *argv],
                              capture_output=True, text=True)
        wall = time.time() - t0
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, sep="\n")
            raise SystemExit(proc.returncode)
        r = json.loads((out / "report.json").read_text())
        stages = re.findall(r"stage time: (.*)", (out / "train.log").read_text())
    p, c = r["parity"], r["census"]
    return {"cores": os.cpu_count(), "torch threads": r["machine"]["threads"], "scheme": r["scheme_tag"],
            "recipe": r["recipe"],
            "recipe budget": ", ".join(f"{k} {r['recipe_config'][k]}" for k in _BUDGET_KEYS
                                       if k in r["recipe_config"]),
            **{f"time: {k}": f"{v:.1f} s" for k, v in r["timings_s"].items()},
            "time: train, by stage": "; ".join(stages),
            "wall time (process)": f"{wall:.1f} s",
            "teacher FP accuracy": f"{r['teacher']['accuracy']:.2f} %",
            "student PyTorch accuracy": f"{p['reference_accuracy']:.2f} %",
            "student ONNX Runtime accuracy": f"{p['accuracy']:.2f} %",
            "top-1 agreement": f"{p['top1_agreement']:.3f} %",
            "max |logit diff| (output steps, reported)": p["max_diff_steps"],
            "parity gate": "pass" if r["gate"]["passed"] else "FAIL",
            "integer Conv/Gemm / float": f"{c['integer_compute']} / {len(c['float_compute'])}"}


def main(argv: list[str]) -> int:
    rows = measure(argv)
    w = max(len(k) for k in rows)
    print(f"| {'measure':<{w}} | value |\n|{'-' * (w + 2)}|-------|")
    for k, v in rows.items():
        print(f"| {k:<{w}} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
