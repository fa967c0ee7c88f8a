"""Python API behind ``dfq-deploy inspect``: metadata, per-layer bits and the runtime's view of a model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

SUB8_NOTE = ("ONNX Runtime and TensorRT have no sub-8-bit convolution kernels: layers below 8 bits run in 8-bit "
             "integer kernels on low-bit values (smaller range, same speed as 8-bit; no 4-bit speed-up).")


def inspect_onnx(path: str | Path, runtime: str = "onnxruntime", build_engine: bool = False) -> dict:
    """A JSON-ready report on ``path``: metadata, layer bits and, per ``runtime``, the kernel census or rule check.

    ``ok`` is False when the runtime would not run every Conv/Gemm as an integer kernel (onnxruntime) or the graph
    breaks a TensorRT Q/DQ rule (tensorrt). ``build_engine``: also build (or take from the cache) the TensorRT
    engine where TensorRT is installed; off by default, since a build takes minutes on a Jetson.
    """
    from .export.inspect import layer_bits
    from .export.load import load_onnx_safely
    from .export.pair_sums import check_pair_sums, scheme_portable

    model = load_onnx_safely(path)
    meta = _metadata(model)
    bits = meta.get("dfq_deploy.layer_bits")
    problems = []
    if bits is not None and not _well_formed_bits(bits):
        problems.append("metadata dfq_deploy.layer_bits is malformed (not {layer: {weight, input}}); the bits "
                        "below are read from the graph")
        bits = None
    bits = bits or layer_bits(model)
    report: dict = {"model": str(path), "runtime": runtime, "metadata": meta, "layer_bits": bits, "ok": True}

    if any(b["weight"] < 8 or b["input"] < 8 for b in bits.values()):
        report["note"] = SUB8_NOTE
    pairs = check_pair_sums(model)
    report["pair_sums"] = pairs.to_dict()
    report["portable"] = scheme_portable(model)
    if report["portable"] and not pairs:
        problems.append("the metadata says the model was exported as portable, but some integer layers can saturate "
                        "a 16-bit pair sum on x86 CPUs without VNNI")
    if runtime in RUNTIME_SECTIONS:
        report[runtime], report["ok"] = RUNTIME_SECTIONS[runtime](path, model, build_engine)
    if problems:
        report["metadata_problems"] = problems
    report["ok"] = report["ok"] and not (report["portable"] and not pairs)
    return report


def _metadata(model) -> dict:
    """The model's ``metadata_props``, with dfq-deploy's JSON values parsed."""
    meta = {p.key: p.value for p in model.metadata_props}
    for k, v in list(meta.items()):
        if k.startswith("dfq_deploy.") and v[:1] in "[{":
            try:
                meta[k] = json.loads(v)
            except json.JSONDecodeError:
                pass
    return meta


def _onnxruntime_section(path: str | Path, model, build_engine: bool) -> tuple[dict, bool]:
    """ONNX Runtime's kernel census of the optimised graph; ok when every Conv/Gemm runs as an integer kernel."""
    from .export.inspect import ort_kernel_census

    census = ort_kernel_census(path)
    return census.to_dict(), census.all_integer


def _tensorrt_section(path: str | Path, model, build_engine: bool) -> tuple[dict, bool]:
    """TensorRT's Q/DQ rules checked statically, and (``build_engine``, where TensorRT runs) the engine built."""
    from .export.trt_rules import check_tensorrt_rules
    from .runtimes import find_runtime

    check = check_tensorrt_rules(model)
    trt_cls, reason = find_runtime("tensorrt")
    if trt_cls is None:
        engine = "not built: " + reason
    elif not check.ok:
        engine = "not built: the graph breaks TensorRT's Q/DQ rules"
    elif not build_engine:
        engine = "not built (add --build-engine, or run `dfq-deploy compile`)"
    else:  # the real proof where TensorRT exists: its parser and builder accept the graph
        from .runtimes.trt import load_or_build

        plan, how = load_or_build(path)
        engine = f"{how} ({len(plan)} bytes)"
    return {**check.to_dict(), "engine": engine}, check.ok


# runtime name -> its section of the report: (path, model, build_engine) -> (section, ok)
RUNTIME_SECTIONS: dict[str, Callable[[str | Path, object, bool], tuple[dict, bool]]] = {
    "onnxruntime": _onnxruntime_section, "tensorrt": _tensorrt_section}


def _well_formed_bits(bits) -> bool:
    return isinstance(bits, dict) and all(
        isinstance(b, dict) and all(isinstance(b.get(k), int) and not isinstance(b.get(k), bool)
                                    for k in ("weight", "input")) for b in bits.values())


def inspect_text(r: dict) -> str:
    """The human-readable form of :func:`inspect_onnx`'s report."""
    meta = r["metadata"]
    lines = [f"model: {r['model']}"]
    for key in ("profile", "version", "recipe", "scheme", "portable", "input_shape", "mean", "std", "class_names",
                "teacher_sha256", "student_sha256"):
        if f"dfq_deploy.{key}" in meta:
            lines.append(f"  {key:<16}{meta[f'dfq_deploy.{key}']}")
    other = sorted(k for k in meta if not k.startswith("dfq_deploy."))
    for k in other:
        lines.append(f"  {k:<16}{meta[k]}")
    lines.append(f"layers ({len(r['layer_bits'])}): weight bits / input bits")
    for name, b in r["layer_bits"].items():
        lines.append(f"  W{b['weight']}A{b['input']}  {name}")
    if r.get("note"):
        lines.append(f"note: {r['note']}")
    if "pair_sums" in r:
        ps = r["pair_sums"]
        claim = {True: "exported as portable", False: "exported with --vnni-only"}.get(r.get("portable"),
                                                                                         "no portable claim")
        verdict = "same integers on every CPU" if ps["exact_without_vnni"] else "exact only with VNNI / AMX, ARM, GPUs"
        lines.append(f"portability ({claim}): {verdict}; worst 16-bit pair sum per integer layer (x86 without VNNI "
                     f"saturates past {ps['limit']}):")
        lines += [f"  {'exact' if d['exact_without_vnni'] else 'SATURATES':<9} "
                  f"{'u8 x u8' if d['worst_pair_sum'] is None else d['worst_pair_sum']:>7}  input codes "
                  f"{d['input_codes']}  weight codes {d['weight_codes']}  {d['node']}" for d in ps["layers"]]
    lines += [f"warning: {p}" for p in r.get("metadata_problems", [])]
    if "onnxruntime" in r:
        c = r["onnxruntime"]
        lines.append(f"ONNX Runtime (CPU, optimisation ALL): {c['integer_compute']} Conv/Gemm/MatMul as integer "
                     f"kernels, {len(c['float_compute'])} float -> "
                     f"{'ALL INTEGER' if c['all_integer'] else 'NOT all integer'}")
        lines += [f"  integer  {n}" for n in c["integer_nodes"]]
        lines += [f"  FLOAT    {n}" for n in c["float_compute"]]
        lines += [f"  float Add {n}" for n in c["float_adds"]]
    if "tensorrt" in r:
        t = r["tensorrt"]
        lines.append(f"TensorRT Q/DQ rules (static): {'pass' if t['ok'] else 'FAIL'}; "
                     f"{t['quantized_compute']} quantized "
                     f"Conv/Gemm, {t['qdq_pairs']} QuantizeLinear")
        lines += [f"  [{v['rule']}] {v['node']}: {v['detail']}" for v in t["violations"]]
        lines.append(f"  engine: {t['engine']}")
    return "\n".join(lines)
