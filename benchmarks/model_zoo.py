"""Every torchvision classifier through `dfq-deploy train-export`, as a user with their own model runs it.

    .venv/bin/python benchmarks/model_zoo.py [--models resnet18,mobilenet_v2] [--out benchmarks/results/model_zoo.json]
        [--settings tiny|default] [--timeout 1800] [--docs docs/models.md]

For each model of ``torchvision.models.list_models(module=torchvision.models)`` (or ``--models``): the model is built
with ``num_classes=10`` and random weights, its BatchNorm statistics are re-estimated on noise images (so that the
BatchNorm folded into each convolution is not the identity), it is saved as safetensors with a model card at the
model's smallest sensible input (:data:`INPUT_SIZE`), and the CLI runs on it in a child process:

    dfq-deploy train-export --teacher CARD --eval-data synthetic --eval-limit 256 --quiet [settings]

``tiny`` settings (the default): 1 batch of 32 ZeroQ images, 10 inversion steps, 5 reconstruction steps per block
(what the gate is about is the export, which does not depend on how long the student trained). Recorded per model:
the exit code, the error line when it failed, the integer Conv/Gemm count and the float ones, the layer-local worst
step, top-1 agreement, wall time and peak memory of the child. Results are appended per model to ``--out`` and a
model already there is skipped (the run resumes). ``--docs`` rewrites the table of docs/models.md from the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the smallest input each model family takes: 32x32 (CIFAR's size) leaves torchvision's five stride-2 stages a 1x1
# map; a model whose adaptive pooling must be the identity for ONNX (VGG, AlexNet: 7x7 / 6x6 feature maps) or whose
# design needs it (Inception v3: >= 75; the vision transformers: their patch grid) gets its native size
INPUT_SIZE = {"vgg": 224, "alexnet": 224, "inception_v3": 96, "vit": 224, "swin": 224, "maxvit": 224}
DEFAULT_SIZE = 32
SETTINGS = {
    "tiny": ["--set", "calib_batches=1", "--set", "batch_size=32", "--set", "zeroq_steps=10", "--set",
             "recon_iters=5", "--eval-limit", "256"],
    "default": [],
}


def input_size(name: str) -> int:
    return next((s for prefix, s in INPUT_SIZE.items() if name.startswith(prefix)), DEFAULT_SIZE)


def build_teacher(name: str, folder: Path, size: int) -> Path:
    """Random-weight ``torchvision:name`` with BatchNorm statistics of noise, saved with its card; returns the card."""
    import torch
    from safetensors.torch import save_file

    from dfq_deploy.models import ModelCard, build_model

    torch.manual_seed(0)
    kwargs = {"num_classes": 10}
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False  # torchvision's default with weights; its auxiliary heads only train
        kwargs["init_weights"] = True
    model = build_model(f"torchvision:{name}", **kwargs)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the noise batches
    model.train()
    with torch.no_grad():
        for i in range(4):
            model(torch.randn(16, 3, size, size, generator=torch.Generator().manual_seed(i)))
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / f"{name}.safetensors"))
    card = ModelCard(arch=f"torchvision:{name}", arch_kwargs=kwargs, input_shape=(3, size, size),
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                     class_names=tuple(f"class{i}" for i in range(10)), weights=f"{name}.safetensors")
    path = folder / f"{name}.json"
    path.write_text(card.to_json())
    return path


def _run_measured(cmd: list[str], timeout: int) -> tuple[int | str, str, float]:
    """(exit code or "timeout", stderr, peak resident memory of the child in MiB, from its own rusage)."""
    import threading

    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True, cwd=ROOT)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        code = "timeout" if proc.returncode == -9 else proc.returncode
        return code, err.read(), usage.ru_maxrss / 1024


def run_one(name: str, settings: str, timeout: int, threads: int | None) -> dict:
    from dfq_deploy.isa import cpu_info, describe

    with tempfile.TemporaryDirectory(prefix="zoo-") as tmp:
        tmp = Path(tmp)
        size = input_size(name)
        t0 = time.time()
        card = build_teacher(name, tmp, size)
        out = tmp / "run"
        cmd = [sys.executable, "-m", "dfq_deploy", "train-export", "--teacher", str(card), "--eval-data", "synthetic",
               "--quiet", "--out", str(out), *SETTINGS[settings]]
        if threads:
            cmd += ["--threads", str(threads)]
        t1 = time.time()
        code, stderr, peak_mib = _run_measured(cmd, timeout)
        wall = time.time() - t1
        row = {"model": name, "input": [3, size, size], "exit_code": code, "wall_s": round(wall, 1),
               "build_s": round(t1 - t0, 1), "peak_rss_mib": round(peak_mib), "cpu": describe(cpu_info())}
        report = out / "report.json"
        if report.is_file():
            r = json.loads(report.read_text())
            row.update(passed=r["gate"]["passed"], failures=r["gate"]["failures"],
                       integer_compute=r["census"]["integer_compute"],
                       float_compute=len(r["census"]["float_compute"]),
                       layer_worst_steps=r["gate"]["layers"]["worst_steps"],
                       agreement=r["parity"]["top1_agreement"], timings_s=r["timings_s"],
                       float64_agreement=r["gate"].get("float64_agreement"),
                       tie_replay=r["gate"].get("tie_replay"),
                       agreement_floor=r["parity"]["min_agreement"])
        else:
            row["passed"] = False
        row["error"] = _error_line(stderr) if code else ""
        if code:
            row["stderr_tail"] = "\n".join(stderr.strip().splitlines()[-8:])[-2000:]
        return row


def _error_line(stderr: str) -> str:
    """The CLI's ``error:`` / ``internal error:`` line (with its ``fix:``), else the last line."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(("error:", "internal error:")):
            fix = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].startswith("fix:") else ""
            return (lines[i] + ("  " + fix if fix else ""))[:400]
    return lines[-1][:400] if lines else ""


# the most expensive models run last (an interrupted matrix keeps the cheap majority); the rest in name order
_EXPENSIVE = ("regnet_y_128gf", "regnet_y_32gf", "regnet_x_32gf", "regnet_y_16gf", "regnet_x_16gf", "efficientnet_b7",
              "efficientnet_b6", "efficientnet_v2_l", "convnext_large", "vit_h_14", "vit_l_16", "vit_l_32", "alexnet",
              "vgg")


def _cost_order(name: str) -> tuple[int, str]:
    return next((i + 1 for i, p in enumerate(_EXPENSIVE) if name.startswith(p)), 0), name


def _result(row: dict) -> str:
    if row.get("passed"):
        return "pass"
    if row["exit_code"] == "timeout":
        return "timeout"
    first = _error_line(row.get("stderr_tail", "")) or row.get("error", "")
    first = first.split("  fix:")[0].removeprefix("error: ")
    kind = "refused" if row["exit_code"] in (2, 3, 4, 5) else "FAIL"
    return f"{kind} (exit {row['exit_code']}): {first[:160]}"


# the families the support matrix is judged on (the list); the rest of torchvision's classifiers are run
# and reported too
FAMILIES = ("resnet", "resnext", "wide_resnet", "regnet", "mobilenet", "efficientnet", "mnasnet", "shufflenet",
            "squeezenet", "googlenet", "inception", "densenet", "vgg", "convnext")


def write_table(results: dict, path: Path, names: list[str]) -> None:
    """The support matrix as a markdown table between the markers of ``path`` (the rest of the page is prose);
    ``names`` not in the results yet are listed as not run."""
    rows = results["rows"]
    ran = [n for n in names if n in rows]
    family = [n for n in ran if n.startswith(FAMILIES)]
    count = {k: sum(1 for n in family if _result(rows[n]).startswith(k)) for k in ("pass", "refused")}
    count["FAIL"] = len(family) - count["pass"] - count["refused"]
    internal = sum(1 for n in ran if rows[n]["exit_code"] == 1)
    lines = [f"Run so far: {len(ran)} of {len(names)} classifiers ({len(names) - len(ran)} not run yet; the benchmark "
             f"resumes from its results file). Of the {len(family)} run in the issue's families: {count['pass']} "
             f"pass, {count['refused']} refused before training, {count['FAIL']} fail or time out. Internal errors: "
             f"{internal}. Settings `{results['settings']}`; {results['cpu_info'].get('model', '?')} "
             f"({', '.join(results['cpu_info'].get('features', []))}).", "",
             "| model | input | result | integer Conv/Gemm | float Conv/Gemm | agreement | wall time | peak memory |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        if name not in rows:
            lines.append(f"| {name} | {'x'.join(map(str, [3, input_size(name), input_size(name)]))} | not run yet "
                         "| | | | | |")
            continue
        r = rows[name]
        agreement = f"{r['agreement']:.1f} %" if r.get("agreement") is not None else "-"
        replay = r.get("tie_replay") or {}
        if replay.get("explains"):  # the runtime's own ties replayed in the reference explain it
            agreement += (f" (its {replay['elements']} tie(s) replayed: self "
                          f"{replay['agreement_with_reference']:.1f} %, gate >= {r['agreement_floor']:.1f} %)")
        elif r.get("float64_agreement") is not None:  # the gate measured how far rounding alone moves the top-1
            agreement += f" (float64 self {r['float64_agreement']:.1f} %, gate >= {r['agreement_floor']:.1f} %)"
        lines.append(f"| {name} | {'x'.join(map(str, r['input']))} | {_result(r)} | {r.get('integer_compute', '-')} "
                     f"| {r.get('float_compute', '-')} | {agreement} | {r['wall_s']:.0f} s | {r['peak_rss_mib']} MiB |")
    begin, end = "<!-- model_zoo table begin -->", "<!-- model_zoo table end -->"
    text = path.read_text() if path.is_file() else f"{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail)


def main(argv: list[str] | None = None) -> int:
    import torchvision

    from dfq_deploy.isa import cpu_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=None, help="comma-separated torchvision names (default: all classifiers)")
    ap.add_argument("--settings", choices=sorted(SETTINGS), default="tiny")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/model_zoo.json")
    ap.add_argument("--docs", default=None, help="write the table to this markdown file (e.g. docs/models.md)")
    ap.add_argument("--redo", action="store_true", help="run models that are in --out already again")
    ap.add_argument("--docs-only", action="store_true", help="run nothing: write --docs from --out")
    args = ap.parse_args(argv)
    names = args.models.split(",") if args.models else \
        sorted(torchvision.models.list_models(module=torchvision.models), key=_cost_order)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"cpu_info": cpu_info(), "rows": {}}
    if not args.docs_only:
        results.update(cpu_info=cpu_info(), python=platform.python_version(), settings=args.settings,
                       command=" ".join(["benchmarks/model_zoo.py", *(argv if argv is not None else sys.argv[1:])]))
    for name in names if not args.docs_only else []:
        if name in results["rows"] and not args.redo:
            continue
        row = run_one(name, args.settings, args.timeout, args.threads)
        results["rows"][name] = row
        print(f"{name:<22} exit {row['exit_code']!s:<7} {'pass' if row['passed'] else 'FAIL'}  "
              f"{row['wall_s']:7.1f} s  {row.get('integer_compute', '-')} int / {row.get('float_compute', '-')} float"
              f"  {row['error'][:150]}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    if args.docs:
        every = sorted(torchvision.models.list_models(module=torchvision.models), key=_cost_order)
        write_table(results, Path(args.docs), every + [n for n in results["rows"] if n not in every])
    return 0


if __name__ == "__main__":
    sys.exit(main())
