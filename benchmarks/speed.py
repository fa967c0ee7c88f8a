"""Speed of what dfq-deploy ships against what a user would run instead, and of its training.

    .venv/bin/python benchmarks/speed.py [--models resnet20,resnet18] [--batches 1,64,256] [--threads 1,2] \\
        [--rounds 7] [--out benchmarks/results/speed.json]                          # inference
    .venv/bin/python benchmarks/speed.py --part train [--threads 2] [--steps 10] [--recipes ptq,dmkd,...] \\
        [--label after] [--code DIR]                                                 # training
    .venv/bin/python benchmarks/speed.py --part job [--label after]                 # the default job, by stage
    .venv/bin/python benchmarks/speed.py --table
    .venv/bin/python benchmarks/speed.py --models resnet20 --ablate pad_conv_input_channels \\
        --out benchmarks/results/speed_ablate.json                                   # one pass's before / after

Per model, five variants of the same network:

- ``torch-fp32``: the float model in PyTorch (eager, ``inference_mode``);
- ``ort-fp32``: the float model exported to ONNX, ONNX Runtime CPU, optimisation level ALL (the baseline of the
  ratios);
- ``ort-quantize_static-int8``: ONNX Runtime's own ``quantize_static`` (QDQ, per-channel int8 weights, uint8
  activations, MinMax calibration): what a user without dfq-deploy would pick;
- ``dfq-W8A8`` and ``dfq-W4A4``: dfq-deploy's onnxruntime-profile exports (first and last layer 8-bit), portable
  (the default: the same integers on every CPU);
- ``dfq-W8A8-vnni-only`` and ``dfq-W4A4-vnni-only``: the same with ``--vnni-only`` (full 8-bit int8 weights
  everywhere, exact only on CPUs with VNNI), the form before the portable scheme.

Speed does not depend on the weights' values, so the quantized variants are calibrated on a few random batches, not
trained. Models: the shipped ResNet-20 (1x28x28) and torchvision's ResNet-18 at 3x224x224 (random weights).

Timing: for each (model, threads, batch), every variant's session is built and warmed up, then ``--rounds`` rounds
run each variant once per round, interleaved (so a slow spell of the machine hits every variant alike); a
variant's time is its median. Idle thread pools sleep instead of spinning (OpenMP ``PASSIVE``, ONNX Runtime
``allow_spinning=0``), so one variant's idle threads do not take cores from the next. Ratios are taken within
the same cell. A cell's result is written to ``--out`` as soon as it is measured and skipped when found there, so
an interrupted run resumes where it stopped.

Training (``--part train``), per recipe at its default batch, each recipe in a fresh process (so its peak memory is
its own), on the shipped teacher with a W4A4 student:

- ``ptq`` (the default recipe): *generator* steps are ZeroQ's inversion steps (Adam on one batch of 128 images,
  the recipe's 100 steps), *student* steps are block-reconstruction steps (batch 32, the recipe's 100 per block on
  its 512 + 512 images, per-block set-up included: the stage's time divided by its steps);
- the KD recipes: *generator* steps are warm-up steps (generator only), *student* steps are joint steps after it
  (one generator step and one student step, as the loop runs them), and the student's share alone; LIS has no
  generator: its inversion steps are given instead. Each runs ``--steps`` + 1 warm-up steps, noise calibration (no
  reconstruction) and ``--steps`` joint steps; the first call of each kind is not counted, the median is taken;
- peak memory: the process's peak resident set (``ru_maxrss``) and its growth over the resident set once the
  teacher is loaded; on CUDA the peak allocated GPU memory.

``--code DIR`` measures the ``dfq_deploy`` package in ``DIR`` (e.g. a ``git worktree`` of an older commit) instead of
the installed one: the before / after figures on the issue come from the same script. ``--label`` names the rows
(``before``, ``after``); a (label, recipe) row found in ``--out`` is skipped. ``--part job`` runs the README's main
job once through ``benchmarks/demo_time.py`` and keeps its stage split.
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

import numpy as np

# Inference only (set in main(), before torch is imported): idle threads must sleep, not spin. The variants run
# interleaved in one process, and a thread pool still spinning after its own run (OpenMP's default wait policy, ONNX
# Runtime's default) steals a core from the next variant on a 2-core machine. Measured before this: W8A8 at batch 64
# took 42 ms with 2 threads against 26 ms with 1. Training keeps OpenMP's own policy, as in the job: a training step
# is many small operations, and passive waiting slowed block reconstruction 1.7-2x (about one core of two in use).

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


def build_variants(name: str, work: Path, ablate: str | None = None) -> dict[str, Path | object]:
    """Variant name -> ONNX path (or the torch module for ``torch-fp32``), built once per model in ``work``.

    ``ablate``: one onnxruntime-profile pass of ``dfq_deploy.export.onnx_export`` (e.g. ``pad_conv_input_channels``);
    the dfq variants are then also exported without it, from the same calibrated model, as ``dfq-W8A8-no-<pass>``
    and ``dfq-W4A4-no-<pass>``: a pass's before / after, timed in the same interleaved rounds."""
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
        without = work / f"{name}-dfq-{tag}-no-{ablate}.onnx"
        vnni = work / f"{name}-dfq-{tag}-vnni-only.onnx"
        if not vnni.exists():  # full 8-bit weights as int8: the form before the portable scheme
            q = quantize_model(model, QuantScheme.from_tag(tag, portable=False))
            calibrate(q, calib)
            export_onnx(q.eval(), vnni, shape, profile="onnxruntime", portable=False)
        out[f"dfq-{tag}-vnni-only"] = vnni
        if not path.exists() or (ablate and not without.exists()):
            q = quantize_model(model, QuantScheme.from_tag(tag))
            calibrate(q, calib)
            export_onnx(q.eval(), path, shape, profile="onnxruntime")
            if ablate:
                from dfq_deploy.export import onnx_export

                if not callable(getattr(onnx_export, ablate, None)):
                    raise SystemExit(f"--ablate {ablate}: not a pass of dfq_deploy.export.onnx_export")
                kept = getattr(onnx_export, ablate)
                setattr(onnx_export, ablate, lambda model: 0)
                try:
                    export_onnx(q.eval(), without, shape, profile="onnxruntime")
                finally:
                    setattr(onnx_export, ablate, kept)
        out[f"dfq-{tag}"] = path
        if ablate:
            out[f"dfq-{tag}-no-{ablate}"] = without
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

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # Linux: the model name tells the machine kinds apart (the VM's CPU differs between runs)
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    from dfq_deploy.isa import cpu_info

    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_info": cpu_info(),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


KD_RECIPES = ("dmkd", "gdfq", "dfqf", "adversarial", "lis")


def _use_code(code: str | None) -> None:
    """Import ``dfq_deploy`` from ``code`` instead of the installed (editable) package."""
    if code:
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path.insert(0, str(Path(code).resolve()))


def _rss_mib() -> float:
    """The current resident set of this process (Linux ``/proc``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def train_one(recipe: str, threads: int, steps: int, device: str) -> dict:
    """One recipe's training speed in this process (see the module docstring)."""
    import contextlib
    import resource

    import torch

    from dfq_deploy.config import config_from_dict
    from dfq_deploy.models import load_teacher
    from dfq_deploy.quant import QuantScheme, quantize_model
    from dfq_deploy.recipes import RECIPES

    torch.set_num_threads(threads)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    teacher, card = load_teacher()
    teacher = teacher.to(dev)
    shape, classes = tuple(card.input_shape), len(card.class_names)
    student = quantize_model(teacher, QuantScheme(4, 4)).to(dev)
    base_rss = _rss_mib()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    cfg_cls, fn = RECIPES[recipe]
    row: dict = {"recipe": recipe, "threads": threads, "device": str(dev)}
    if recipe == "ptq":
        from dfq_deploy.quant import calibrate, reconstruct
        from dfq_deploy.synthesis import invert_images

        cfg = cfg_cls()
        invert_images(teacher, cfg.batch_size, shape, 2, batch_size=cfg.batch_size, lr=cfg.zeroq_lr,
                      progress=False)  # one-off costs
        sync()
        t0 = time.perf_counter()
        x, _ = invert_images(teacher, cfg.batch_size, shape, cfg.zeroq_steps, batch_size=cfg.batch_size,
                             lr=cfg.zeroq_lr, progress=False)
        sync()
        gen_s = (time.perf_counter() - t0) / cfg.zeroq_steps
        batches = [x] * cfg.calib_batches  # the recipe's 4 x 128 images (speed does not depend on their content)
        calibrate(student, batches)
        rcfg = cfg.reconstruction()
        t0 = time.perf_counter()
        hist = reconstruct(student, batches, rcfg, progress=False)
        sync()
        rec_steps = len(hist) * rcfg.iters
        row.update(batch=cfg.batch_size, student_batch=rcfg.batch_size,
                   generator_steps_per_s=round(1 / gen_s, 3),
                   student_steps_per_s=round(rec_steps / (time.perf_counter() - t0), 3),
                   student_steps=rec_steps, generator_steps=cfg.zeroq_steps)
    else:
        opts = {"seed": 0, "steps": steps, "recon.iters": 0}
        fields = cfg_cls.__dataclass_fields__
        if "warmup_steps" in fields:
            opts.update(warmup_steps=steps + 1, calib_source="noise")
        if recipe == "lis":
            opts.update(num_images=128, inversion_steps=steps)
        if "pixel_mean" in fields:
            opts.update(pixel_mean=tuple(card.mean), pixel_std=tuple(card.std))
        cfg = config_from_dict(cfg_cls, opts)
        # the recipe's timer hook: every generator step ("warmup" / "joint") and each LIS inversion
        calls: dict[str, list[float]] = {"warmup": [], "joint": [], "inversion": []}

        @contextlib.contextmanager
        def timer(phase):
            sync()
            t = time.perf_counter()
            yield
            sync()
            calls[phase].append(time.perf_counter() - t)

        stamps: dict[int, float] = {}

        def on_step(step, _student):
            sync()
            stamps[step] = time.perf_counter()

        fn(teacher, student, cfg, shape, classes, progress=False, on_step=on_step, timer=timer)
        inversions = [t / steps for t in calls["inversion"]]  # LIS inverts with inversion_steps = steps
        joint = (stamps[steps] - stamps[1]) / (steps - 1)  # step 1 pays one-off costs
        row.update(batch=cfg.batch_size, student_steps_per_s=round(1 / joint, 3), student_steps=steps - 1)
        if calls["warmup"][1:]:
            gen = statistics.median(calls["warmup"][1:])
            row.update(generator_steps_per_s=round(1 / gen, 3), generator_steps=len(calls["warmup"]) - 1)
        if calls["joint"][1:]:
            row["student_only_steps_per_s"] = round(1 / (joint - statistics.median(calls["joint"][1:])), 3)
        if inversions:
            row.update(generator_steps_per_s=round(1 / statistics.median(inversions), 3),
                       generator_steps=f"{len(inversions)} inversions x {steps}")
    row["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    row["peak_rss_growth_mib"] = round(row["peak_rss_mib"] - base_rss)
    if dev.type == "cuda":
        row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 20)
    return row


def train_part(args, results: dict, out: Path) -> None:
    import subprocess

    rows = results.setdefault("train", {})
    for recipe in args.recipes.split(","):
        key = f"{args.label}|{recipe}|threads={args.threads_train}"
        if key in rows:
            continue  # measured in an earlier (interrupted) run
        t0 = time.time()
        cmd = [sys.executable, __file__, "--train-one", recipe, "--threads", str(args.threads_train),
               "--steps", str(args.steps), "--device", args.device] + (["--code", args.code] if args.code else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)  # OpenMP's own wait policy, as in the job
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr[-3000:], sep="\n")
            raise SystemExit(f"{recipe}: the measuring process failed")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows[key] = {"label": args.label, **row, "code": args.code or "installed", "wall_s": round(time.time() - t0)}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"{key}: {json.dumps(rows[key])}", flush=True)


def job_part(args, results: dict, out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import demo_time

    key = f"{args.label}|default job"
    if key not in results.setdefault("job", {}):
        results["job"][key] = {"label": args.label, **demo_time.measure([])}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("inference", "train", "job"), default="inference")
    ap.add_argument("--recipes", default=",".join(("ptq",) + KD_RECIPES))
    ap.add_argument("--steps", type=int, default=10, help="KD recipes: joint steps (the first is not timed)")
    ap.add_argument("--label", default="after")
    ap.add_argument("--code", default=None, help="measure the dfq_deploy package in this folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train-one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--models", default="resnet20,resnet18")
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results/speed.json")
    ap.add_argument("--work", default=None, help="folder for the ONNX files (default: a temporary one)")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--ablate", default=None, help="also time the dfq exports without this onnxruntime-profile pass "
                                                   "(use another --out)")
    args = ap.parse_args(argv)
    if args.train_one:
        _use_code(args.code)
        print(json.dumps(train_one(args.train_one, int(args.threads), args.steps, args.device)))
        return 0
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"inference": {}}
    if args.part == "inference" and not args.table:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported
    if args.table:
        print_table(results)
        return 0
    if args.part != "inference":
        args.threads_train = int(args.threads.split(",")[-1])
        (train_part if args.part == "train" else job_part)(args, results, out)
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
                variants = variants or build_variants(name, work, args.ablate)
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
    if results.get("inference"):
        print_inference_table(results)
    if results.get("train"):
        print_train_table(results)
    for key, job in results.get("job", {}).items():
        print(f"\n{key}: " + ", ".join(f"{k} {v}" for k, v in job.items() if k != "label"))


def print_inference_table(results: dict) -> None:
    cols = list(VARIANTS)
    cols += [v for v in dict.fromkeys(v for c in results["inference"].values() for v in c["median_ms"]) if v not in cols]
    print("\n| model | threads | batch | " + " | ".join(cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for cell in results["inference"].values():
        ms, sp = cell["median_ms"], cell["speedup_vs_ort_fp32"]
        print(f"| {cell['model']} | {cell['threads']} | {cell['batch']} | "
              + " | ".join(f"{ms[v]:.2f} ms ({sp[v]:.2f}x)" if v in ms else "-" for v in cols) + " |")
    print("\nms: median per batch; (x): speed relative to ONNX Runtime FP32 in the same cell (higher is faster)")


def print_train_table(results: dict) -> None:
    print("\n| code | recipe | threads | batch (student) | generator steps/s | student steps/s | "
          "student step alone /s | peak RSS MiB (growth) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results["train"].values():
        batch = f"{r['batch']}" + (f" ({r['student_batch']})" if "student_batch" in r else "")
        print(f"| {r['label']} | {r['recipe']} | {r['threads']} | {batch} | {r.get('generator_steps_per_s', '-')} "
              f"| {r['student_steps_per_s']} | {r.get('student_only_steps_per_s', '-')} | "
              f"{r['peak_rss_mib']} ({r['peak_rss_growth_mib']}) |")
    print("\nptq: generator = ZeroQ inversion step (batch 128), student = block-reconstruction step (batch 32); "
          "KD recipes: student = one joint step (generator + student), alone = the student's share")


if __name__ == "__main__":
    sys.exit(main())
