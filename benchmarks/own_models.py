"""Users' own ``nn.Module`` classifiers (not in any zoo) through the Python API: quantize, data-free PTQ, export, gate.

    .venv/bin/python benchmarks/own_models.py [--out benchmarks/results/own_models.json]

Each model is a class written here, as a user writes theirs, with random weights and BatchNorm statistics of noise
images; the steps are the library calls `train-export` makes (:func:`dfq_deploy.quant.quantize_model`, the ``ptq``
recipe at tiny settings, :func:`dfq_deploy.export.export_onnx`, :func:`dfq_deploy.validate.check_parity` with the
default gate on 256 synthetic inputs). Recorded per model: gate verdict and failures, integer and float Conv/Gemm,
worst layer-local step, top-1 agreement, wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn


class SpectrogramNet(nn.Module):
    """A keyword spotter: one channel, a non-square 40x100 input, SiLU, a squeeze-excitation gate, grouped convs."""

    def __init__(self, classes: int = 12):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.body = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(32), nn.SiLU(),
                                  nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32, bias=False), nn.BatchNorm2d(32),
                                  nn.SiLU())
        self.se_fc1, self.se_fc2 = nn.Conv2d(32, 8, 1), nn.Conv2d(8, 32, 1)
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        x = self.body(self.stem(x))
        gate = torch.sigmoid(self.se_fc2(torch.relu(self.se_fc1(x.mean((2, 3), keepdim=True)))))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x * gate, 1), 1))


class BranchyNet(nn.Module):
    """Inception-like branches concatenated, max pooling, a residual add over a Hardswish branch, a channel
    shuffle."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True))
        self.b1 = nn.Sequential(nn.Conv2d(24, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.b2 = nn.Sequential(nn.Conv2d(24, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(2)
        self.mix = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(32),
                                 nn.Hardswish(inplace=True))
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.stem(x)
        y = self.pool(torch.cat([self.b1(x), self.b2(x)], 1))
        y = y + self.mix(y)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.shuffle(y), 1), 1))

    @staticmethod
    def shuffle(y):
        n, c, h, w = y.shape
        return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleThenAddNet(BranchyNet):
    """The same with the channel shuffle before the residual add: refused (ModelError) by name."""

    def forward(self, x):
        x = self.stem(x)
        y = self.pool(self.shuffle(torch.cat([self.b1(x), self.b2(x)], 1)))
        y = y + self.mix(y)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class WideStemNet(nn.Module):
    """A plain VGG-like stack with ReLU6 and Dropout on 3x48x48 images, classes in a Linear-ReLU-Linear head."""

    def __init__(self, classes: int = 5):
        super().__init__()
        layers, c = [], 3
        for width in (32, 64, 64, 128):
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU6(inplace=True),
                       nn.MaxPool2d(2)]
            c = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * 3 * 3, 64), nn.ReLU(inplace=True), nn.Dropout(0.2),
                                  nn.Linear(64, classes))

    def forward(self, x):
        return self.head(self.features(x))


MODELS = {"spectrogram_net": (SpectrogramNet, (1, 40, 100)), "branchy_net": (BranchyNet, (3, 32, 32)),
          "wide_stem_net": (WideStemNet, (3, 48, 48)), "shuffle_then_add_net": (ShuffleThenAddNet, (3, 32, 32))}


def noise_batchnorm(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(4):
            model(torch.randn(16, *shape, generator=torch.Generator().manual_seed(i)))
    return model.eval()


def run(name: str, images: int = 256) -> dict:
    from dfq_deploy.data import EvalSet
    from dfq_deploy.errors import ModelError
    from dfq_deploy.export import export_onnx
    from dfq_deploy.quant import QuantScheme, quantize_model
    from dfq_deploy.recipes.ptq import PTQConfig, train_ptq
    from dfq_deploy.runtimes import get_runtime
    from dfq_deploy.validate import Gate, check_parity, run_logits

    cls, shape = MODELS[name]
    torch.manual_seed(0)
    t0 = time.time()
    teacher = noise_batchnorm(cls(), shape)
    classes = teacher(torch.zeros(1, *shape)).shape[1]
    try:
        student = quantize_model(teacher, QuantScheme())
    except ModelError as e:
        return {"model": name, "input": list(shape), "passed": False, "refused": str(e).replace("\n", " "),
                "failures": [], "wall_s": round(time.time() - t0, 1)}
    train_ptq(teacher, student, PTQConfig(calib_batches=1, batch_size=32, zeroq_steps=10, recon_iters=5), shape,
              classes, progress=False)
    data = EvalSet(torch.randn(images, *shape, generator=torch.Generator().manual_seed(1)),
                   torch.full((images,), -1), [str(i) for i in range(classes)], f"synthetic[{images}]")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(student, path, shape)
        ref = run_logits(get_runtime("torch")(student), data, progress=False)
        out = run_logits(get_runtime("onnxruntime")(path), data, progress=False)
        result = check_parity("torch", ref, {"onnxruntime": out}, data, path, Gate(), student=student,
                              profile="onnxruntime")
    d = result.to_dict()
    return {"model": name, "input": list(shape), "passed": d["passed"], "failures": d["failures"],
            "integer_compute": d["census"]["integer_compute"], "float_compute": len(d["census"]["float_compute"]),
            "layer_worst_steps": d["layers"]["worst_steps"],
            "agreement": d["runtimes"]["onnxruntime"]["top1_agreement"], "wall_s": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    from dfq_deploy.isa import cpu_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/own_models.json")
    args = ap.parse_args(argv)
    rows = []
    for name in MODELS:
        rows.append(run(name))
        r = rows[-1]
        if "refused" in r:
            print(f"{name:<22} refused: {r['refused'][:200]}", flush=True)
            continue
        print(f"{name:<22} {'pass' if r['passed'] else 'FAIL'}  {r['integer_compute']} int / {r['float_compute']} "
              f"float  agreement {r['agreement']:.2f} %  {r['wall_s']} s  {'; '.join(r['failures'])[:200]}", flush=True)
    Path(args.out).write_text(json.dumps({"cpu_info": cpu_info(), "rows": rows}, indent=2) + "\n")
    return 0 if all(r["passed"] or "refused" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
