"""Do image priors help the default recipe's ZeroQ images? One (variant, bits, seed) per call; rows are appended to
the JSON, so the table fills over several calls (two side by side with one thread each).

    .venv/bin/python benchmarks/zeroq_priors.py VARIANT BITS SEED [--out benchmarks/results/zeroq_priors.json]

VARIANT joins with '+': ``base`` (the default: BatchNorm statistics only), ``ce`` (random labels, cross-entropy on the
teacher's logits, weight 1), ``tv`` (total-variation smoothness prior, weight 1e-3), ``range`` (pixels kept inside
the range a real normalised image can take). Everything else is the default ``ptq`` recipe (512 images, 100 Adam
steps per batch, block reconstruction with one augmented copy); accuracy is the PyTorch student's on the full
Fashion-MNIST test split (the exported model matches it: docs/validate.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variant")
    ap.add_argument("bits")
    ap.add_argument("seed", type=int)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/zeroq_priors.json")
    args = ap.parse_args(argv)

    import torch

    from dfq_deploy.data import evaluate, load_eval_set
    from dfq_deploy.models import load_teacher
    from dfq_deploy.quant import QuantScheme, calibrate, quantize_model, reconstruct
    from dfq_deploy.recipes import PTQConfig
    from dfq_deploy.synthesis import invert_images

    torch.set_num_threads(args.threads)
    teacher, card = load_teacher()
    shape, classes = tuple(card.input_shape), len(card.class_names)
    ev = load_eval_set("fashion-mnist", card.mean, card.std)
    cfg = PTQConfig(seed=args.seed)
    kw = dict(batch_size=cfg.batch_size, lr=cfg.zeroq_lr, seed=args.seed, progress=False)
    parts = set(args.variant.split("+"))
    unknown = parts - {"base", "ce", "tv", "range"}
    if unknown:
        ap.error(f"unknown variant part(s) {sorted(unknown)}")
    if "ce" in parts:
        kw["num_classes"] = classes
    if "tv" in parts:
        kw["tv_weight"] = 1e-3
    if "range" in parts:
        kw["pixel_range"] = ([(0 - m) / s for m, s in zip(card.mean, card.std)],
                             [(1 - m) / s for m, s in zip(card.mean, card.std)])
    t0 = time.time()
    x, _ = invert_images(teacher, cfg.calib_batches * cfg.batch_size, shape, cfg.zeroq_steps, **kw)
    batches = list(x.split(cfg.batch_size))
    student = quantize_model(teacher, QuantScheme.from_tag(args.bits))
    calibrate(student, batches)
    reconstruct(student, batches, cfg.reconstruction(), False)
    row = {"variant": args.variant, "bits": args.bits, "seed": args.seed,
           "accuracy": evaluate(student.eval(), ev.images, ev.labels), "time_s": round(time.time() - t0)}
    print(json.dumps(row), flush=True)
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {"rows": []}
    data["rows"].append(row)
    out.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
