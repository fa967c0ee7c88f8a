"""Training throughput per recipe on one device: student steps per second at each recipe's default batch size, and
the default ``ptq`` recipe's time per run (it has no student steps: ZeroQ synthesis, calibration, reconstruction).

    .venv/bin/python benchmarks/throughput.py [--device cpu|cuda] [--threads 1] [--steps 20] \\
        [--out benchmarks/results/throughput.json]
    .venv/bin/python benchmarks/throughput.py --table

Teacher: the shipped ResNet-20 (Fashion-MNIST); student W4A4. Each KD recipe runs its default config except: 2
generator warm-up steps, noise calibration and no reconstruction (they come before the timed steps), ``--steps``
student steps. A step's time is read between the first and the last ``on_step`` callbacks (the first step, which
pays one-off costs, is not timed). Results are keyed by device, so CPU and GPU rows live in one file and a re-run
replaces only its own device's rows.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

KD_RECIPES = ("dmkd", "gdfq", "dfqf", "adversarial", "lis")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--recipes", default=",".join(("ptq",) + KD_RECIPES))
    ap.add_argument("--out", default="benchmarks/results/throughput.json")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.table:
        print_table(json.loads(out.read_text()))
        return 0

    import torch

    from dfq_deploy.device import device_name, resolve_device
    from dfq_deploy.models import load_teacher
    from dfq_deploy.quant import QuantScheme, quantize_model
    from dfq_deploy.recipes import RECIPES

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    teacher, card = load_teacher()
    teacher = teacher.to(dev)
    shape, classes = tuple(card.input_shape), len(card.class_names)
    rows = []
    for recipe in args.recipes.split(","):
        cfg_cls, fn = RECIPES[recipe]
        student = quantize_model(teacher, QuantScheme(4, 4))
        opts = {"seed": 0}
        if recipe != "ptq":
            opts.update(steps=args.steps, recon_iters=0)
            if "warmup_steps" in cfg_cls.__dataclass_fields__:
                opts.update(warmup_steps=2, calib_source="noise")
            if recipe == "lis":
                opts.update(num_images=64, inversion_steps=2)
            if "pixel_mean" in cfg_cls.__dataclass_fields__:
                opts.update(pixel_mean=tuple(card.mean), pixel_std=tuple(card.std))
        cfg = cfg_cls(**opts)
        stamps: dict[int, float] = {}

        def on_step(step, _student):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            stamps[step] = time.perf_counter()

        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        fn(teacher, student, cfg, shape, classes, progress=False, on_step=on_step)
        total = time.perf_counter() - t0
        row = {"recipe": recipe, "device": device_name(dev), "threads": torch.get_num_threads(),
               "batch_size": cfg.batch_size, "run_s": round(total, 2)}
        if recipe != "ptq":
            timed = args.steps - 1
            row.update(steps_timed=timed, student_steps_per_s=round(timed / (stamps[args.steps] - stamps[1]), 3))
        if dev.type == "cuda":
            row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 20)
        rows.append(row)
        print(json.dumps(row), flush=True)
    results = json.loads(out.read_text()) if out.exists() else {"rows": []}
    results["rows"] = [r for r in results["rows"] if r["device"] != device_name(dev)] + rows
    results.setdefault("machines", {})[device_name(dev)] = {
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "python": platform.python_version(), "steps": args.steps}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


def print_table(results: dict) -> None:
    print("\n| recipe | device | threads | batch | student steps/s | s per run (ptq: the whole default recipe) | "
          "peak GPU MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        sps = f"{r['student_steps_per_s']:.2f}" if "student_steps_per_s" in r else "-"
        run = f"{r['run_s']:.1f}" if r["recipe"] == "ptq" else "-"
        print(f"| {r['recipe']} | {r['device']} | {r['threads']} | {r['batch_size']} | {sps} | {run} | "
              f"{r.get('peak_gpu_mib', '-')} |")


if __name__ == "__main__":
    sys.exit(main())
