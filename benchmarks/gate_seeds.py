"""The main job, exactly as a user runs it (default recipe, budget and parity gate, full test split), over several
seeds and bit widths: does every correct run pass the default gate?

    .venv/bin/python benchmarks/gate_seeds.py --bits W4A4,W3A3 --seeds 0,1,2,3,4 [--threads 1] \\
        [--out benchmarks/results/gate_seeds.json]
    .venv/bin/python benchmarks/gate_seeds.py --table

Each (bits, seed) is ``dfq_deploy.train_export(TrainExportConfig(...))`` with only the scheme and the seed changed
(what ``dfq-deploy train-export --bits B --set seed=S`` runs). A row records the gate's verdict and reasons, the
top-1 agreement, both accuracies, the logit difference in output steps (reported, not gated) and the layer-local
worst case. Rows are merged into the JSON under a file lock as soon as each run ends, so the benchmark resumes and
two processes (``--bits W4A4`` and ``--bits W3A3`` side by side, one thread each) fill one file.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import sys
import shutil
import time
import warnings
from pathlib import Path

from dfq_deploy.isa import cpu_info

warnings.filterwarnings("ignore")


def _row(report: dict, bits: str, seed: int, seconds: float) -> dict:
    p, g = report["parity"], report["gate"]
    return {"bits": bits, "seed": seed, "device": report.get("device", "cpu"), "gate": "pass" if g["passed"] else "FAIL",
            "failures": g["failures"],
            "top1_agreement": p["top1_agreement"], "accuracy_torch": p["reference_accuracy"],
            "accuracy_runtime": p["accuracy"], "max_logit_steps": p["max_diff_steps"],
            "layer_worst_steps": g["layers"]["worst_steps"], "layer_worst_mismatch": g["layers"]["worst_mismatch"],
            "layer_worst_unexplained": g["layers"]["worst_unexplained"],
            "integer": f"{report['census']['integer_compute']}/{report['census']['integer_compute'] + len(report['census']['float_compute'])}",
            "samples": report["eval"]["samples"], "time_s": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bits", default="W4A4,W3A3")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="where the recipe trains (export and the gate: CPU)")
    ap.add_argument("--out", default="benchmarks/results/gate_seeds.json")
    ap.add_argument("--keep", default=".bench-cache/gate-seeds",
                    help="keep each run directory here (re-validate them later with `dfq-deploy validate`)")
    ap.add_argument("--table", action="store_true", help="only print the table from the JSON")
    ap.add_argument("--revalidate", action="store_true",
                    help="re-run `dfq-deploy validate` (current defaults) on every kept run and update its row")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.table:
        print_table(json.loads(out.read_text()) if out.exists() else {"rows": []})
        return 0
    if args.revalidate:
        return revalidate(out, Path(args.keep), args.threads)

    import torch

    from dfq_deploy.errors import ParityError
    from dfq_deploy.pipeline import TrainExportConfig, train_export
    from dfq_deploy.quant import QuantScheme
    from dfq_deploy.validate import Gate

    out.parent.mkdir(parents=True, exist_ok=True)
    for bits in args.bits.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            done = json.loads(out.read_text()) if out.exists() else {"rows": []}
            if any(r["bits"] == bits and r["seed"] == seed for r in done["rows"]):
                continue
            run = Path(args.keep) / f"{bits}-seed{seed}"
            if run.exists():  # an interrupted earlier attempt: the run itself is complete or absent, never partial
                shutil.rmtree(run)
            run.parent.mkdir(parents=True, exist_ok=True)
            cfg = TrainExportConfig(scheme=QuantScheme.from_tag(bits), recipe_options={"seed": seed}, out=str(run),
                                    threads=args.threads, device=args.device, progress=False)
            t0 = time.time()
            try:
                train_export(cfg)
            except ParityError:
                pass  # the run directory is kept; its report says why
            row = _row(json.loads((run / "report.json").read_text()), bits, seed, time.time() - t0)
            print(json.dumps(row), flush=True)
            with open(out.with_suffix(".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                disk = json.loads(out.read_text()) if out.exists() else {"rows": []}
                disk["rows"] = [r for r in disk["rows"] if (r["bits"], r["seed"]) != (bits, seed)] + [row]
                disk["rows"].sort(key=lambda r: (r["bits"], r["seed"]))
                disk.update({"gate": Gate().to_dict(), "recipe": cfg.recipe,
                             "machine": {"cpu": platform.processor() or platform.machine(), "cpu_info": cpu_info(),
                                         "threads": torch.get_num_threads(), "torch": torch.__version__}})
                tmp_out = out.with_suffix(f".tmp{os.getpid()}")
                tmp_out.write_text(json.dumps(disk, indent=2) + "\n")
                os.replace(tmp_out, out)
    print_table(json.loads(out.read_text()))
    return 0


def revalidate(out: Path, keep: Path, threads: int | None) -> int:
    """The gate's verdict on every kept run, with the defaults of the code as it is now (what a user gets)."""
    from dfq_deploy.errors import ParityError
    from dfq_deploy.validate import Gate
    from dfq_deploy.validate.validate import ValidateConfig, validate

    results = json.loads(out.read_text())
    for r in results["rows"]:
        run = keep / f"{r['bits']}-seed{r['seed']}"
        try:
            validate(ValidateConfig(target=str(run), runtimes=("onnxruntime",), threads=threads, progress=False))
        except ParityError:
            pass
        v = json.loads((run / "validation.json").read_text())
        p = v["runtimes"]["onnxruntime"]
        r.update({"gate": "pass" if v["passed"] else "FAIL", "failures": v["failures"],
                  "top1_agreement": p["top1_agreement"], "accuracy_runtime": p["accuracy"],
                  "max_logit_steps": p["max_diff_steps"], "layer_worst_steps": v["layers"]["worst_steps"],
                  "layer_worst_mismatch": v["layers"]["worst_mismatch"],
                  "layer_worst_unexplained": v["layers"]["worst_unexplained"]})
        print(json.dumps(r), flush=True)
    results["gate"] = Gate().to_dict()
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


def print_table(results: dict) -> None:
    print("\n| bits | seed | default gate | top-1 agreement | accuracy PyTorch / ONNX Runtime | max logit diff "
          "(output steps, reported) | layer-local worst: steps / share on another code / of those, no tie | "
          "integer Conv/Gemm | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        verdict = r["gate"] if r["gate"] == "pass" else f"FAIL: {'; '.join(r['failures'])}"
        untied = f"{r['layer_worst_unexplained']:.4%}" if "layer_worst_unexplained" in r else "not recorded"
        print(f"| {r['bits']} | {r['seed']} | **{verdict}** | {r['top1_agreement']:.2f} % | "
              f"{r['accuracy_torch']:.2f} / {r['accuracy_runtime']:.2f} | {r['max_logit_steps']:g} | "
              f"{r['layer_worst_steps']:g} / {r['layer_worst_mismatch']:.4%} / {untied} | {r['integer']} | "
              f"{r['time_s']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
