"""Data-free methods (and the baselines a user would otherwise pick) on a shipped Fashion-MNIST teacher (ResNet-20
by default, ``--teacher mobilenetv2_fmnist`` for the MobileNetV2), at several bit widths, budgets and seeds.
Accuracy is measured on **ONNX Runtime integer kernels after export** on the full Fashion-MNIST test split (10 000
images).

    .venv/bin/python benchmarks/accuracy.py --budget demo --seeds 0,1,2 --bits W4A4,W3A3 \\
        --methods dmkd,gdfq,ptq-zeroq,ptq-recon [--out benchmarks/results/accuracy.json] \\
        [--plot docs/img/accuracy_vs_bits.png] [--cache-dir .bench-cache] [--threads 1]
    .venv/bin/python benchmarks/accuracy.py --table     # print the table and redraw the plot from the JSON only

Budgets: ``demo`` is exactly what the default ``dfq-deploy train-export`` runs (the recipe's default config);
``long`` raises the generator warm-up and the student steps (see ``BUDGETS``) for runs of <= 30 min on 2 cores.

Each (method, bits, budget, seed) is one measurement, merged into the JSON (under a file lock) as soon as it is
done: a re-run skips what is there, so the benchmark resumes and can be filled over several sittings, and one
process per seed (``--seeds 1 --threads 1`` twice side by side) fills one file. A row of the JSON is one
(method, bits, budget) with ``accuracies`` (one per seed, in ``seeds`` order) and ``time_s`` (one per seed).

Per seed the ZeroQ images and each generator warm-up are computed once and shared by every method and bit width
that uses them (``warmup_cache``), as a user re-running with other bits would not share them: ``time_s`` of a row is
its own work only (reconstruction, student training, export; plus the generator warm-up for the seeds listed in
``time_includes_warmup``, the first generator recipe of a seed), and the shared ZeroQ synthesis is in
``synthesis_s``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from dfq_deploy.isa import cpu_info

warnings.filterwarnings("ignore")

# method -> (recipe, recipe option overrides, note). "ptq-*" and "ort-static" use the shared ZeroQ images directly.
METHODS: dict[str, tuple[str, dict, str]] = {
    "ptq-noise": ("ptq", {"source": "noise", "recon_iters": 0}, "calibration on Gaussian noise"),
    "ptq-zeroq": ("ptq", {"source": "zeroq", "recon_iters": 0}, "calibration on ZeroQ images"),
    "ptq-recon": ("ptq", {"source": "zeroq", "recon_augment": 0}, "ZeroQ calibration + block reconstruction"),
    "ptq-recon-aug1": ("ptq", {"source": "zeroq", "recon_augment": 1},
                       "the default recipe: ZeroQ calibration + block reconstruction on the images and one shifted / "
                       "mirrored copy of them"),
    "ptq-recon-mse": ("ptq", {"source": "zeroq", "recon_augment": 1, "weight_clip": "mse"},
                      "the default recipe with each channel's weight range searched for the least error"),
    "ptq-recon-full": ("ptq", {"source": "zeroq", "recon_augment": 1, "weight_grid": "full"},
                       "the default recipe on the full weight grid (every signed code at zero point 0)"),
    "ptq-recon-slr1e-3": ("ptq", {"source": "zeroq", "recon_scale_lr": 1e-3, "recon_augment": 0},
                          "ZeroQ calibration + block reconstruction with step-size learning rate 1e-3 "
                          "(the first default)"),
    "ort-static": ("ort-static", {}, "ONNX Runtime quantize_static on ZeroQ images, every layer at the same bits"),
    "dmkd": ("dmkd", {"recon_iters": 0}, "DMKD without block reconstruction (the recipe's default before issue 10)"),
    "gdfq": ("gdfq", {}, "single float teacher"),
    "dmkd-recon": ("dmkd", {"recon_iters": 100}, "block reconstruction before KD (the dmkd recipe's default)"),
    "gdfq-recon": ("gdfq", {"recon_iters": 100}, "single teacher, block reconstruction before KD"),
    "dmkd-fp-w8": ("dmkd", {"teacher_bits": ("W8A8",)}, "ablation: float + W8A8 teachers"),
    "dmkd-uniform": ("dmkd", {"balancer": "uniform"}, "ablation: fixed equal teacher weights"),
    "dmkd-ft-teachers": ("dmkd", {"teacher_recon_iters": 100}, "ablation: quantized teachers block-reconstructed"),
    "dfqf": ("dfqf", {}, ""),
    "adversarial": ("adversarial", {}, ""),
    "lis": ("lis", {}, "one synthetic set per seed shared by every bit width"),
    "real-qat": ("real-qat", {}, "real training images (upper bound, not data-free)"),
}
# recipe option overrides of each budget ("demo" = the defaults `train-export` runs); a nested dict applies to that
# config class only. "long": 4x the ZeroQ images (2 048), twice the generator warm-up, 3x the KD steps, and twice
# the reconstruction steps per block for ptq (whose reconstruction overfits 512 images at 300 steps, but not 2 048)
BUDGETS = {"demo": {}, "long": {"warmup_steps": 800, "steps": 500, "calib_batches": 16,
                                "PTQConfig": {"recon_iters": 200}}}
BITS_ORDER = {"W2A2": 2, "W3A3": 3, "W4A4": 4, "W6A6": 6, "W8A8": 8}


def _ort_accuracy(onnx_path: Path, eval_set, threads: int | None) -> tuple[float, dict]:
    from dfq_deploy.export import ort_kernel_census
    from dfq_deploy.runtimes.ort import OnnxRuntime
    from dfq_deploy.validate import run_logits

    logits = run_logits(OnnxRuntime(onnx_path, threads=threads), eval_set, progress=False)
    acc = float((logits.argmax(1) == eval_set.labels.numpy()).mean() * 100)
    census = ort_kernel_census(onnx_path)
    return acc, {"integer": census.integer_compute, "float": len(census.float_compute)}


def _options(cls, budget: dict, overrides: dict, seed: int) -> dict:
    """The budget's and the method's options that ``cls`` takes: its fields and its sections' fields, flat
    (``recon_iters``) or dotted, which ``cls`` gathers into the section itself."""
    from dfq_deploy.config import section_key

    fields = cls.__dataclass_fields__
    own = budget.get(cls.__name__, {})
    return {k: v for k, v in {**budget, **own, **overrides, "seed": seed}.items()
            if k in fields or section_key(cls, k) is not None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bits", default="W4A4,W3A3")
    ap.add_argument("--methods", default="ptq-zeroq,ptq-recon,gdfq,dmkd")
    ap.add_argument("--budget", default="demo", choices=sorted(BUDGETS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--teacher", default=None, help="model card or shipped teacher name (default: the shipped "
                    "ResNet-20); give each teacher its own --out")
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="where the recipes train (export and ONNX Runtime: CPU); write "
                    "GPU results to their own --out, their rows are not CPU figures")
    ap.add_argument("--out", default="benchmarks/results/accuracy.json")
    ap.add_argument("--plot", default="docs/img/accuracy_vs_bits.png")
    ap.add_argument("--table", action="store_true", help="only print the table and redraw the plot")
    ap.add_argument("--cache-dir", default=None,
                    help="keep each seed's ZeroQ images and generator warm-ups here, so an interrupted run resumes "
                         "without recomputing them (read back with torch.load(weights_only=True))")
    args = ap.parse_args(argv)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"rows": []}
    if args.table:
        print_table(results)
        if args.plot:
            plot(results, Path(args.plot))
        return 0
    unknown = [m for m in args.methods.split(",") if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")

    from dfq_deploy.data import load_eval_set, load_fashion_mnist
    from dfq_deploy.data.eval_set import normalize_uint8
    from dfq_deploy.export import export_onnx
    from dfq_deploy.export.ort_quantize import ort_quantize_static
    from dfq_deploy.models import load_teacher
    from dfq_deploy.data import evaluate
    from dfq_deploy.quant import QuantScheme, calibrate, quantize_model, reconstruct
    from dfq_deploy.recipes import RECIPES, LISConfig, PTQConfig
    from dfq_deploy.recipes.ptq import set_weight_ranges
    from dfq_deploy.recipes.fixed_set import SetKDConfig, kd_on_images
    from dfq_deploy.recipes.loop import KDLoopConfig, _zeroq_images

    from dfq_deploy.device import device_name, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    teacher, card = load_teacher(args.teacher)
    if results.get("teacher", card.arch) != card.arch:
        ap.error(f"{out} holds rows of another teacher ({results['teacher']}): give this one its own --out")
    shape, classes = tuple(card.input_shape), len(card.class_names)
    eval_set = load_eval_set("fashion-mnist", card.mean, card.std, limit=args.eval_limit)
    out.parent.mkdir(parents=True, exist_ok=True)
    fp_acc = evaluate(teacher, eval_set.images, eval_set.labels)
    results.update({"teacher": card.arch, "fp_accuracy": fp_acc, "eval": f"{eval_set.name} ({len(eval_set)} images)",
                    "budgets": {k: v or "the recipe defaults (what train-export runs)" for k, v in BUDGETS.items()},
                    "machine": {"cpu": platform.processor() or platform.machine(), "cpu_info": cpu_info(),
                                "threads": torch.get_num_threads(),
                                "torch": torch.__version__, "device": device_name(dev)}})
    print(f"teacher FP {fp_acc:.2f} % on {results['eval']}", flush=True)
    teacher = teacher.to(dev)
    budget = BUDGETS[args.budget]

    def row_for(rows, method, bits):
        for r in rows:
            if (r["method"], r["bits"], r["budget"]) == (method, bits, args.budget):
                return r
        r = {"method": method, "bits": bits, "budget": args.budget, "seeds": [], "accuracies": [], "time_s": [],
             "note": METHODS[method][2]}
        rows.append(r)
        return r

    def save(method, bits, seed, acc, seconds, census, paid_warmup):
        # several processes (one per seed) may fill the same file: merge under a lock, write atomically
        with open(out.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            disk = json.loads(out.read_text()) if out.exists() else {"rows": []}
            disk.update({k: v for k, v in results.items() if k not in ("rows", "synthesis_s")})
            disk.setdefault("synthesis_s", {}).update(results.get("synthesis_s", {}))
            r = row_for(disk["rows"], method, bits)
            if seed not in r["seeds"]:
                r["seeds"].append(seed)
                r["accuracies"].append(acc)
                r["time_s"].append(round(seconds, 1))
                if paid_warmup:
                    r.setdefault("time_includes_warmup", []).append(seed)
            r["census"] = census
            r["mean"] = statistics.fmean(r["accuracies"])
            r["std"] = statistics.stdev(r["accuracies"]) if len(r["accuracies"]) > 1 else None
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(disk, indent=2) + "\n")
            os.replace(tmp, out)
            results["rows"] = disk["rows"]
        print(f"{args.budget:>5} {bits:>5} {method:<13} seed {seed}: {acc:6.2f} %  ({seconds:.0f} s)", flush=True)

    work = Path(tempfile.mkdtemp(prefix="dfq-acc-"))
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    for seed in (int(s) for s in args.seeds.split(",")):
        cache_file = cache_dir / f"warmup-seed{seed}.pt" if cache_dir else None
        warm_cache: dict = torch.load(cache_file, weights_only=True) if cache_file and cache_file.exists() else {}
        cached_keys = len(warm_cache)
        shared: dict = {}

        def keep_cache():
            nonlocal cached_keys
            if cache_file is not None and len(warm_cache) > cached_keys:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                torch.save(warm_cache, cache_file.with_suffix(".tmp"))
                os.replace(cache_file.with_suffix(".tmp"), cache_file)
                cached_keys = len(warm_cache)

        def zeroq_batches():
            if "zeroq" not in shared:
                t0 = time.time()
                # the batches (and cache entry) the generator recipes calibrate and reconstruct their students on
                zq_cfg = KDLoopConfig(**_options(KDLoopConfig, budget, {}, seed))
                shared["zeroq"] = _zeroq_images(teacher, zq_cfg, shape, warm_cache, progress=False)
                key = f"zeroq-seed{seed}" + ("" if args.budget == "demo" else f"-{args.budget}")
                results.setdefault("synthesis_s", {})[key] = round(time.time() - t0, 1)
            return shared["zeroq"]

        for bits in args.bits.split(","):
            scheme = QuantScheme.from_tag(bits)
            for method in args.methods.split(","):
                r = row_for(results["rows"], method, bits)
                if seed in r["seeds"]:
                    continue
                recipe, overrides, _ = METHODS[method]
                overrides = dict(overrides)
                scheme = QuantScheme.from_tag(bits, weight_grid=overrides.pop("weight_grid", "narrow"))
                onnx_path = work / f"{seed}-{bits}-{method}.onnx"
                paid = False
                if recipe == "ort-static":
                    if scheme.weight_bits not in (4, 8) or dev.type != "cpu":
                        continue  # ONNX Runtime has no other integer type
                    batches = zeroq_batches()
                    t0 = time.time()
                    ort_quantize_static(teacher, onnx_path, shape, batches, scheme.weight_bits, scheme.act_bits)
                else:
                    student = quantize_model(teacher, scheme)
                    if recipe == "ptq" and overrides["source"] == "zeroq":
                        batches = zeroq_batches()
                        t0 = time.time()
                        cfg = PTQConfig(**_options(PTQConfig, budget, overrides, seed))
                        set_weight_ranges(student, cfg)
                        calibrate(student, batches)
                        reconstruct(student, batches, cfg.reconstruction(), progress=False)
                    elif recipe == "real-qat":
                        t0 = time.time()
                        imgs, _ = load_fashion_mnist("train")
                        x = normalize_uint8(imgs, card.mean, card.std)
                        kd_on_images(teacher, student, x, SetKDConfig(**_options(SetKDConfig, budget, {}, seed)),
                                     progress=False, name="real-data QAT")
                    elif recipe == "lis":
                        lis_set = work / f"lis-seed{seed}.safetensors"
                        opts = _options(LISConfig, budget, overrides, seed)
                        cfg = LISConfig(**opts, synthetic_set=str(lis_set), pixel_mean=tuple(card.mean),
                                        pixel_std=tuple(card.std))
                        if not lis_set.exists():
                            t_syn = time.time()
                            RECIPES["lis"][1](teacher, quantize_model(teacher, scheme),
                                              LISConfig(**{**cfg.__dict__, "steps": 0, "recon_iters": 0}), shape,
                                              classes, progress=False)
                            results.setdefault("synthesis_s", {})[f"lis-seed{seed}"] = round(time.time() - t_syn, 1)
                        t0 = time.time()
                        RECIPES["lis"][1](teacher, student, cfg, shape, classes, progress=False)
                    else:
                        cfg_cls, fn = RECIPES[recipe]
                        opts = _options(cfg_cls, budget, overrides, seed)
                        if "pixel_mean" in cfg_cls.__dataclass_fields__:  # as train-export does
                            opts.update(pixel_mean=tuple(card.mean), pixel_std=tuple(card.std))
                        cfg = cfg_cls(**opts)
                        if cfg.calib_source == "zeroq":
                            zeroq_batches()
                        t0 = time.time()
                        had = len(warm_cache)
                        fn(teacher, student, cfg, shape, classes, progress=False, warmup_cache=warm_cache)
                        paid = len(warm_cache) > had  # this run paid for a generator warm-up later rows reuse
                    export_onnx(student.cpu(), onnx_path, shape, profile="onnxruntime")
                seconds = time.time() - t0
                keep_cache()
                acc, census = _ort_accuracy(onnx_path, eval_set, args.threads)
                save(method, bits, seed, acc, seconds, census, paid)
    print_table(results)
    if args.plot:
        plot(results, Path(args.plot))
    return 0


def _cell(r: dict | None, fp: float) -> str:
    if r is None or not r["accuracies"]:
        return "-"
    n = len(r["accuracies"])
    if n == 1:
        return f"{r['accuracies'][0]:.2f} (1 seed)"
    return f"{r['mean']:.2f} ± {r['std']:.2f} (n={n}, {r['mean'] - fp:+.2f})"


def print_table(results: dict) -> None:
    rows = results["rows"]
    fp = results["fp_accuracy"]
    print(f"\nFP teacher: {fp:.2f} %  |  eval: {results['eval']}  |  mean ± std over seeds, drop vs FP\n")
    for budget in dict.fromkeys(r["budget"] for r in rows):
        sub = [r for r in rows if r["budget"] == budget and r["accuracies"]]
        bits = sorted(dict.fromkeys(r["bits"] for r in sub), key=lambda b: -BITS_ORDER.get(b, 0))
        by = {(r["bits"], r["method"]): r for r in sub}
        print(f"budget {budget}: {BUDGETS.get(budget) or 'the recipe defaults (what train-export runs)'}")
        print("| method | " + " | ".join(bits) + " | time per run (s, mean) |")
        print("|---|" + "---|" * (len(bits) + 1))
        for m in dict.fromkeys(r["method"] for r in sub):
            times = [t for b in bits if (b, m) in by for t in by[b, m]["time_s"]]
            cells = [_cell(by.get((b, m)), fp) for b in bits]
            print(f"| {m} | " + " | ".join(cells) + f" | {statistics.fmean(times):.0f} |")
        print()


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["accuracies"] and not any(math.isnan(a) for a in r["accuracies"])]
    budgets = list(dict.fromkeys(r["budget"] for r in rows))
    fig, axes = plt.subplots(1, len(budgets), figsize=(7 * len(budgets), 4.5), squeeze=False)
    for ax, budget in zip(axes[0], budgets, strict=True):
        sub = [r for r in rows if r["budget"] == budget]
        for i, m in enumerate(dict.fromkeys(r["method"] for r in sub)):
            pts = sorted((BITS_ORDER.get(r["bits"], 0), r["mean"], r["std"] or 0.0) for r in sub if r["method"] == m)
            xs, ys, es = zip(*pts, strict=True)
            ax.errorbar(xs, ys, yerr=es, marker="os^Dv"[i // 10 % 5], capsize=3, label=m, color=f"C{i % 10}",
                        linestyle="--" if m == "real-qat" or i >= 10 else "-")
        ax.axhline(results["fp_accuracy"], color="k", linewidth=0.8, label="FP teacher")
        ticks = sorted({BITS_ORDER.get(r["bits"], 0) for r in sub})
        ax.set_xticks(ticks, [b for b, v in sorted(BITS_ORDER.items(), key=lambda kv: kv[1]) if v in ticks])
        ax.set_ylabel("top-1 % (ONNX Runtime integer kernels)")
        ax.set_title(f"ResNet-20 Fashion-MNIST, budget '{budget}' (mean ± std over seeds)")
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
