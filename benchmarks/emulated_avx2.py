"""Do exported models give the same ONNX Runtime logits natively and on an emulated AVX2 CPU without VNNI?

    .venv/bin/python benchmarks/emulated_avx2.py --models RUN/model.onnx,other.onnx [--images 1000] \\
        [--out benchmarks/results/emulated_avx2.json]

Each model runs on the first ``--images`` Fashion-MNIST test images (normalised by its metadata) in ONNX Runtime
(CPU, optimisation level ALL, one thread) natively and under ``qemu-x86_64-static -cpu Haswell``
(:mod:`dfq_deploy.runtimes.emulated`). Reported: bit-identical or not, the share of logits that differ, the largest
difference, the top-1 agreement, the static pair-sum verdict of the graph, and both CPUs as each process saw them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--out", default="benchmarks/results/emulated_avx2.json")
    args = ap.parse_args(argv)

    import onnx

    from dfq_deploy.data import load_eval_set
    from dfq_deploy.export.pair_sums import check_pair_sums, scheme_portable
    from dfq_deploy.isa import cpu_info
    from dfq_deploy.runtimes.emulated import EmulatedOnnxRuntime
    from dfq_deploy.runtimes.ort import OnnxRuntime

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"rows": {}}
    results["machine"] = cpu_info()
    for path in args.models.split(","):
        model = onnx.load(path)
        meta = {p.key: p.value for p in model.metadata_props}
        mean, std = json.loads(meta.get("dfq_deploy.mean", "[0.286]")), json.loads(meta.get("dfq_deploy.std", "[0.353]"))
        x = load_eval_set("fashion-mnist", mean, std, limit=args.images).images.numpy()
        t0 = time.time()
        with OnnxRuntime(path, threads=1) as native, EmulatedOnnxRuntime(path) as emulated:
            here = np.concatenate([native.infer(x[i:i + 250]) for i in range(0, len(x), 250)])
            there = np.concatenate([emulated.infer(x[i:i + 250]) for i in range(0, len(x), 250)])
        pairs = check_pair_sums(model)
        row = {"model": path, "images": len(x), "bit_identical": bool(np.array_equal(here, there)),
               "logits_differing": float((here != there).mean()), "max_abs_diff": float(np.abs(here - there).max()),
               "top1_agreement": float((here.argmax(1) == there.argmax(1)).mean() * 100),
               "portable_claim": scheme_portable(model), "exact_without_vnni": bool(pairs),
               "worst_pair_sum": pairs.to_dict()["worst_pair_sum"], "emulated_cpu": emulated.child_cpu,
               "seconds": round(time.time() - t0, 1)}
        results["rows"][f"{path}|images={len(x)}"] = row
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"{path}: bit-identical {row['bit_identical']}, {row['logits_differing']:.2%} of logits differ "
              f"(max {row['max_abs_diff']:.3g}), top-1 {row['top1_agreement']:.2f} %, static bound "
              f"{'exact' if row['exact_without_vnni'] else 'can saturate'} (worst {row['worst_pair_sum']}), "
              f"{row['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
