"""Every data-free method (and the baselines a user would otherwise pick) on the shipped ResNet-20 Fashion-MNIST
teacher, at several bit widths, with one step budget and seed. Accuracy is measured on **ONNX Runtime integer
kernels after export** on the full Fashion-MNIST test split (10 000 images).

    .venv/bin/python benchmarks/accuracy.py [--bits W4A4,W3A3,W8A8] [--warmup-steps 400] [--steps 150] \\
        [--out benchmarks/results/accuracy.json] [--plot docs/img/accuracy_vs_bits.png]

Results go to a JSON file row by row (a re-run skips rows already there, so an interrupted run resumes), then a
Markdown table is printed and a plot (accuracy vs bits per method) is written.

Methods: ptq-noise, ptq-zeroq, ort-static (ONNX Runtime quantize_static on ZeroQ images; 8 and 4 bits only),
gdfq, dmkd, dfqf, adversarial, lis (one synthetic set shared by every bit width, as LIS intends), and real-qat
(KD on the real training split: the upper bound, benchmark only). Generator warm-ups with the same generator loss
are computed once and shared across bit widths and recipes (``warmup_cache``); each row's time excludes shared
warm-ups and the LIS/ZeroQ synthesis, which are reported as separate rows.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

METHODS = ("ptq-noise", "ptq-zeroq", "ort-static", "gdfq", "dmkd", "dfqf", "adversarial", "lis", "real-qat")


def _ort_accuracy(onnx_path: Path, eval_set, threads: int | None) -> tuple[float, dict]:
    from dfq_deploy.export import ort_kernel_census
    from dfq_deploy.runtimes.ort import OnnxRuntime
    from dfq_deploy.validate import run_logits

    logits = run_logits(OnnxRuntime(onnx_path, threads=threads), eval_set, progress=False)
    acc = float((logits.argmax(1) == eval_set.labels.numpy()).mean() * 100)
    census = ort_kernel_census(onnx_path)
    return acc, {"integer": census.integer_compute, "float": len(census.float_compute)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bits", default="W4A4,W3A3,W8A8")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--warmup-steps", type=int, default=400)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lis-images", type=int, default=512)
    ap.add_argument("--lis-inversion-steps", type=int, default=100)
    ap.add_argument("--zeroq-steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/accuracy.json")
    ap.add_argument("--plot", default="docs/img/accuracy_vs_bits.png")
    args = ap.parse_args(argv)

    from dfq_deploy.data import load_eval_set, load_fashion_mnist
    from dfq_deploy.data.eval_set import normalize_uint8
    from dfq_deploy.export import export_onnx
    from dfq_deploy.export.ort_quantize import ort_quantize_static
    from dfq_deploy.models import load_teacher
    from dfq_deploy.models.pretrain import evaluate
    from dfq_deploy.quant import QuantScheme, quantize_model
    from dfq_deploy.recipes import RECIPES, LISConfig, PTQConfig
    from dfq_deploy.recipes.fixed_set import SetKDConfig, kd_on_images
    from dfq_deploy.recipes.loop import KDLoopConfig, _zeroq_images

    if args.threads:
        torch.set_num_threads(args.threads)
    teacher, card = load_teacher()
    shape, classes = tuple(card.input_shape), len(card.class_names)
    eval_set = load_eval_set("fashion-mnist", card.mean, card.std, limit=args.eval_limit)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {"rows": []}
    done = {(r["bits"], r["method"]) for r in results["rows"]}
    fp_acc = evaluate(teacher, eval_set.images, eval_set.labels)
    results.update({"fp_accuracy": fp_acc, "eval": f"{eval_set.name} ({len(eval_set)} images)",
                    "budget": {"warmup_steps": args.warmup_steps, "steps": args.steps, "seed": args.seed,
                               "lis_images": args.lis_images, "lis_inversion_steps": args.lis_inversion_steps,
                               "zeroq_steps": args.zeroq_steps, "batch_size": 128},
                    "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                                "torch": torch.__version__, "device": "cpu"}})
    print(f"teacher FP {fp_acc:.2f} % on {results['eval']}", flush=True)

    def save(row):
        results["rows"].append(row)
        done.add((row["bits"], row["method"]))
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"{row['bits']:>5} {row['method']:<12} {row['accuracy']:6.2f} %  ({row['time_s']:.0f} s)", flush=True)

    warm_cache: dict = {}
    shared: dict = {}
    work = Path(tempfile.mkdtemp(prefix="dfq-acc-"))

    def zeroq_batches():
        if "zeroq" not in shared:
            t0 = time.time()
            # the same batches (and cache entry) the generator recipes calibrate their students on
            shared["zeroq"] = _zeroq_images(teacher, KDLoopConfig(calib_steps=args.zeroq_steps, seed=args.seed), shape,
                                            warm_cache, progress=False)
            shared["zeroq_time"] = time.time() - t0
            print(f"ZeroQ synthesis: {shared['zeroq_time']:.0f} s", flush=True)
        return shared["zeroq"]

    lis_set = out.parent / "lis_synthetic_set.safetensors"
    methods = args.methods.split(",")
    for bits in args.bits.split(","):
        scheme = QuantScheme.from_tag(bits)
        for method in methods:
            if (bits, method) in done:
                continue
            if method == "ort-static" and scheme.weight_bits not in (4, 8):
                save({"bits": bits, "method": method, "accuracy": float("nan"), "time_s": 0.0,
                      "note": "ONNX Runtime quantize_static has no 3-bit type"})
                continue
            t0 = time.time()
            onnx_path = work / f"{bits}-{method}.onnx"
            note = ""
            if method == "ort-static":
                batches = zeroq_batches()
                t0 = time.time()
                ort_quantize_static(teacher, onnx_path, shape, batches, scheme.weight_bits, scheme.act_bits)
                note = "all layers at the same bits (no 8-bit first/last)"
            else:
                student = quantize_model(teacher, scheme)
                if method == "ptq-noise":
                    RECIPES["ptq"][1](teacher, student, PTQConfig(source="noise", seed=args.seed), shape, classes,
                                      progress=False)
                elif method == "ptq-zeroq":
                    from dfq_deploy.quant import calibrate

                    batches = zeroq_batches()
                    t0 = time.time()
                    calibrate(student, batches)
                elif method == "real-qat":
                    imgs, _ = load_fashion_mnist("train")
                    x = normalize_uint8(imgs, card.mean, card.std)
                    kd_on_images(teacher, student, x, SetKDConfig(steps=args.steps, seed=args.seed), progress=False,
                                 name="real-data QAT")
                    note = "real training images (upper bound, not data-free)"
                elif method == "lis":
                    cfg = LISConfig(steps=args.steps, num_images=args.lis_images,
                                    inversion_steps=args.lis_inversion_steps, seed=args.seed,
                                    synthetic_set=str(lis_set), pixel_mean=tuple(card.mean),
                                    pixel_std=tuple(card.std))
                    if not lis_set.exists():
                        t_syn = time.time()
                        RECIPES["lis"][1](teacher, quantize_model(teacher, scheme),
                                          LISConfig(**{**cfg.__dict__, "steps": 0}), shape, classes, progress=False)
                        print(f"LIS synthesis: {time.time() - t_syn:.0f} s", flush=True)
                        results.setdefault("synthesis_s", {})["lis"] = round(time.time() - t_syn, 1)
                        t0 = time.time()
                    RECIPES["lis"][1](teacher, student, cfg, shape, classes, progress=False)
                else:
                    cfg_cls, fn = RECIPES[method]
                    cfg = cfg_cls(steps=args.steps, warmup_steps=args.warmup_steps, seed=args.seed)
                    had = len(warm_cache)
                    fn(teacher, student, cfg, shape, classes, progress=False, warmup_cache=warm_cache)
                    if len(warm_cache) > had:  # this row paid for a warm-up others reuse: report it separately
                        note = "includes its generator warm-up"
                export_onnx(student, onnx_path, shape, profile="onnxruntime")
            train_s = time.time() - t0
            acc, census = _ort_accuracy(onnx_path, eval_set, args.threads)
            save({"bits": bits, "method": method, "accuracy": acc, "drop": acc - fp_acc, "time_s": round(train_s, 1),
                  "census": census, "note": note})
    if "zeroq_time" in shared:
        results.setdefault("synthesis_s", {})["zeroq"] = round(shared["zeroq_time"], 1)
        out.write_text(json.dumps(results, indent=2) + "\n")

    print_table(results)
    if args.plot:
        plot(results, Path(args.plot))
    return 0


def print_table(results: dict) -> None:
    rows = results["rows"]
    bits = list(dict.fromkeys(r["bits"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["bits"], r["method"]): r for r in rows}
    fp = results["fp_accuracy"]
    print(f"\nFP teacher: {fp:.2f} %  |  eval: {results['eval']}  |  budget: {results['budget']}\n")
    print("| method | " + " | ".join(f"{b} acc (drop) | {b} time" for b in bits) + " |")
    print("|---|" + "---|---|" * len(bits))
    for m in methods:
        cells = []
        for b in bits:
            r = by.get((b, m))
            if r is None or r["accuracy"] != r["accuracy"]:
                cells += ["n/a", "-"]
            else:
                int_note = "" if r.get("census", {}).get("float", 0) == 0 else " (float kernels)"
                cells += [f"{r['accuracy']:.2f} ({r['accuracy'] - fp:+.2f}){int_note}", f"{r['time_s']:.0f} s"]
        print(f"| {m} | " + " | ".join(cells) + " |")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["accuracy"] == r["accuracy"]]
    order = {"W3A3": 3, "W4A4": 4, "W8A8": 8}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, m in enumerate(dict.fromkeys(r["method"] for r in rows)):
        pts = sorted((order.get(r["bits"], 0), r["accuracy"]) for r in rows if r["method"] == m)
        ax.plot(*zip(*pts, strict=True), marker="o", label=m, color=f"C{i}", linestyle="--" if m == "real-qat" else "-")
    ax.axhline(results["fp_accuracy"], color="k", linewidth=0.8, label="FP teacher")
    ax.set_xticks([3, 4, 8], ["W3A3", "W4A4", "W8A8"])
    ax.set_ylabel("top-1 % (ONNX Runtime; ort-static W4A4: float kernels)")
    ax.set_title(f"ResNet-20 Fashion-MNIST, {results['budget']['warmup_steps']} warm-up + "
                 f"{results['budget']['steps']} steps, seed {results['budget']['seed']}")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
