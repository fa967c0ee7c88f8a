"""When does padding a convolution's input channels to a multiple of 4 pay in ONNX Runtime? (issue 14)

    .venv/bin/python benchmarks/conv_padding.py [--threads 2] [--rounds 15] \\
        [--out benchmarks/results/conv_padding.json]
    .venv/bin/python benchmarks/conv_padding.py --table

``dfq_deploy.export.ort_passes.pad_conv_input_channels`` moves a ``QLinearConv`` whose input channels are not a
multiple of 4 onto MLAS' symmetric convolution kernel. Whether that pays depends on the convolution, so this times
one QDQ convolution (``Q -> DQ -> Conv -> Relu -> Q -> DQ``, int8 per-channel weights of zero point 0, uint8
activations, 64 output channels) as exported and padded (the pass with no length limit), for each case below: both
sessions in one process, interleaved rounds, median. Both outputs are checked equal first. A case is written to
``--out`` as soon as it is measured and skipped when found there, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# (input channels, kernel, stride, image side, batch)
CASES = [(1, 3, 1, 28, 64), (3, 3, 1, 32, 64), (3, 3, 1, 64, 64), (3, 3, 1, 112, 64), (3, 5, 1, 32, 64),
         (3, 5, 1, 112, 64), (3, 7, 2, 32, 64), (3, 7, 2, 224, 1), (3, 7, 2, 224, 8), (3, 7, 2, 224, 16),
         (3, 7, 2, 224, 64)]


def conv_model(channels: int, kernel: int, stride: int, out_channels: int = 64):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    consts = {"xs": np.array(0.02, np.float32), "xz": np.array(128, np.uint8),
              "w": rng.integers(-127, 128, (out_channels, channels, kernel, kernel)).astype(np.int8),
              "ws": rng.uniform(0.001, 0.002, out_channels).astype(np.float32),
              "wz": np.zeros(out_channels, np.int8), "ys": np.array(0.05, np.float32), "yz": np.array(0, np.uint8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[kernel // 2] * 4, strides=[stride, stride]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            ["n", channels, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def measure(case, threads: int, rounds: int) -> dict:
    import onnxruntime as ort

    from dfq_deploy.export.ort_passes import pad_conv_input_channels

    channels, kernel, stride, side, batch = case
    plain, padded = conv_model(channels, kernel, stride), conv_model(channels, kernel, stride)
    assert pad_conv_input_channels(padded, max_reduction=sys.maxsize) == 1

    def session(model):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as benchmarks/speed.py
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    x = np.random.default_rng(1).standard_normal((batch, channels, side, side)).astype(np.float32)
    runs = {"unpadded": session(plain), "padded": session(padded)}
    outs = [s.run(None, {"x": x})[0] for s in runs.values()]
    assert np.array_equal(*outs), "padding changed the output"
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for k, s in runs.items():
            t0 = time.perf_counter()
            s.run(None, {"x": x})
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"channels": channels, "kernel": kernel, "stride": stride, "side": side, "batch": batch,
            "reduction": channels * kernel * kernel, "threads": threads, "rounds": rounds,
            "unpadded_ms": round(med["unpadded"] * 1e3, 3), "padded_ms": round(med["padded"] * 1e3, 3),
            "padded_speedup": round(med["unpadded"] / med["padded"], 3)}


def print_table(results: dict) -> None:
    print("\n| input | kernel | K | batch | threads | unpadded | padded | padded faster by |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results["cases"].values():
        stride = f" / {r['stride']}" if r["stride"] != 1 else ""
        print(f"| {r['channels']}x{r['side']}x{r['side']} | {r['kernel']}x{r['kernel']}{stride} | {r['reduction']} "
              f"| {r['batch']} | {r['threads']} | {r['unpadded_ms']:.2f} ms | {r['padded_ms']:.2f} ms "
              f"| {r['padded_speedup']:.2f}x |")
    print("\nK: input channels x kernel area (the generic integer GEMM's reduction length)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default="benchmarks/results/conv_padding.json")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"cases": {}}
    if not args.table:
        sys.path.insert(0, str(Path(__file__).parent))
        from speed import machine

        results["machine"] = machine()
        for case in CASES:
            key = "|".join(map(str, case)) + f"|threads={args.threads}"
            if key in results["cases"]:
                continue  # measured in an earlier (interrupted) run
            results["cases"][key] = measure(case, args.threads, args.rounds)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2) + "\n")
            r = results["cases"][key]
            print(f"{key}: unpadded {r['unpadded_ms']:.2f} ms, padded {r['padded_ms']:.2f} ms", flush=True)
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
