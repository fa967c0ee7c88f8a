"""Child process of :class:`.emulated.EmulatedOnnxRuntime`: ``python -m dfq_deploy.runtimes._ort_child MODEL IN.npy
OUT.npz THREADS`` runs MODEL on IN with ONNX Runtime (CPU, level ALL) and writes the first output and the CPU it saw.
It imports numpy, onnxruntime and :mod:`dfq_deploy.isa` only."""

import json
import sys

import numpy as np
import onnxruntime as ort

from dfq_deploy.isa import cpu_info


def main(model: str, inp: str, out: str, threads: str) -> None:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    (logits,) = sess.run([sess.get_outputs()[0].name], {sess.get_inputs()[0].name: np.load(inp)})
    np.savez(out, logits=logits, cpu=np.array(json.dumps(cpu_info())))


if __name__ == "__main__":
    main(*sys.argv[1:5])
