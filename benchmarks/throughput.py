"""Training throughput per recipe on one device: student steps per second at each recipe's default batch size, and
the default ``ptq`` recipe's time per run (it has no student steps: ZeroQ synthesis, calibration, reconstruction).

    .venv/bin/python benchmarks/throughput.py [--device cpu|cuda] [--threads 1] [--steps 20] \\
        [--out benchmarks/results/throughput.json]
    .venv/bin/python benchmarks/throughput.py --nproc 2 --threads 1 [--device cpu]   # 2 processes (gloo / NCCL)
    .venv/bin/python benchmarks/throughput.py --table

Teacher: the shipped ResNet-20 (Fashion-MNIST); student W4A4. Each KD recipe runs its default config except: 2
generator warm-up steps, noise calibration and no reconstruction (they come before the timed steps), ``--steps``
student steps. A step's time is read between the first and the last ``on_step`` callbacks (the first step, which
pays one-off costs, is not timed). Results are keyed by device, so CPU and GPU rows live in one file and a re-run
replaces only its own device's rows.

``--nproc N`` runs the same under ``torchrun`` (``dfq_deploy.distributed``: each process its own batch, gradients
averaged): a student step then trains on N batches, so its row also gives images per second (steps/s x batch x N).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

from dfq_deploy.isa import cpu_info

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
    ap.add_argument("--nproc", type=int, default=1, help="processes (torchrun --standalone)")
    ap.add_argument("--amp", action="store_true", help="KD recipes: bfloat16 autocast for generator and teacher")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.table:
        print_table(json.loads(out.read_text()))
        return 0

    import subprocess

    import torch

    from dfq_deploy import distributed
    from dfq_deploy.cli._common import without_option
    from dfq_deploy.device import device_name, resolve_device

    if args.nproc > 1 and not distributed.launched():
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
               __file__, *without_option(argv if argv is not None else sys.argv[1:], "--nproc")]
        return subprocess.call(cmd)
    from dfq_deploy.models import load_teacher
    from dfq_deploy.quant import QuantScheme, quantize_model
    from dfq_deploy.recipes import RECIPES

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    world = None
    if distributed.launched():
        world = distributed.init(dev)
        dev = distributed.local_device(dev, world)
    nproc = world.size if world else 1
    where = device_name(dev) + (f" x {nproc} processes ({world.backend})" if world else "") + \
        (", amp bf16" if args.amp else "")
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
            if "amp" in cfg_cls.__dataclass_fields__:
                opts.update(amp=args.amp)
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
        row = {"recipe": recipe, "device": where, "threads": torch.get_num_threads(), "processes": nproc,
               "batch_size": cfg.batch_size, "run_s": round(total, 2)}
        if recipe != "ptq":
            timed = args.steps - 1
            sps = timed / (stamps[args.steps] - stamps[1])
            row.update(steps_timed=timed, student_steps_per_s=round(sps, 3),
                       images_per_s=round(sps * cfg.batch_size * nproc, 1))
        if dev.type == "cuda":
            row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 20)
        rows.append(row)
        if distributed.rank() == 0:
            print(json.dumps(row), flush=True)
    if world is not None:
        distributed.shutdown()
        if world.rank != 0:
            return 0
    results = json.loads(out.read_text()) if out.exists() else {"rows": []}
    results["rows"] = [r for r in results["rows"] if r["device"] != where] + rows
    results.setdefault("machines", {})[where] = {
        "cpu": platform.processor() or platform.machine(), "cpu_info": cpu_info(), "torch": torch.__version__,
        "python": platform.python_version(), "steps": args.steps}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


def print_table(results: dict) -> None:
    print("\n| recipe | device | threads per process | batch per process | student steps/s | images/s | s per run "
          "(ptq: the whole default recipe) | peak GPU MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        sps = f"{r['student_steps_per_s']:.2f}" if "student_steps_per_s" in r else "-"
        ips = r.get("images_per_s", r["student_steps_per_s"] * r["batch_size"] if "student_steps_per_s" in r else None)
        run = f"{r['run_s']:.1f}" if r["recipe"] == "ptq" else "-"
        print(f"| {r['recipe']} | {r['device']} | {r['threads']} | {r['batch_size']} | {sps} | "
              f"{'-' if ips is None else f'{ips:.0f}'} | {run} | {r.get('peak_gpu_mib', '-')} |")


if __name__ == "__main__":
    sys.exit(main())
