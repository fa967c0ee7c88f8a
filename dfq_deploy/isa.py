"""The CPU that integer kernels run on: what it is, which int8 instructions it has, and what they compute exactly.

Integer Conv/Gemm kernels differ between CPUs in one way that matters to parity: x86 CPUs without VNNI (AVX2, and
AVX-512 without VNNI) multiply uint8 x int8 with ``vpmaddubsw``, which adds each two neighbouring products in a
signed 16-bit lane that *saturates* before the exact 32-bit accumulation (ONNX Runtime's quantization docs and
OpenVINO's CPU docs both describe it). VNNI / AVX-VNNI / AMX on x86, the dot-product and plain NEON instructions on
ARM, and GPUs accumulate in 32 bits. So a model computes the same integers on every CPU exactly when no two of its
products can sum past :data:`PAIR_SUM_LIMIT` (``quant.scheme.portable_weight_bits``, ``export.pair_sums``).

No torch here: ``inspect`` and ``validate`` run on deployment devices without it.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

PAIR_SUM_LIMIT = 2 ** 15 - 1

# the features that decide which int8 kernels a CPU gets, as Linux names them in /proc/cpuinfo
INT8_FEATURES = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",   # x86
                 "asimd", "asimddp", "i8mm", "sve")                                       # ARM64
# numpy's own CPUID reading, per feature: it sees what *this process* gets (an emulator's CPU, not the host's)
_NUMPY_NAMES = {"avx2": "AVX2", "avx512f": "AVX512F", "avx512bw": "AVX512BW", "avx512_vnni": "AVX512VNNI",
                "asimd": "ASIMD", "asimddp": "ASIMDDP", "sve": "SVE"}


def _cpuinfo() -> tuple[str, set[str]]:
    """Model name and feature flags from /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "", set()
    model = re.search(r"^(?:model name|Model|Hardware|CPU part)\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.M)
    return (model.group(1).strip() if model else ""), set(flags.group(1).split()) if flags else set()


def _process_features() -> dict[str, bool]:
    """The features this process can use, by CPUID, where numpy knows them (empty when it cannot tell)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as seen  # private: fenced here, optional
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as seen
        except ImportError:
            return {}
    return {ours: bool(seen[theirs]) for ours, theirs in _NUMPY_NAMES.items() if theirs in seen}


def int8_dot_kind(features: list[str] | set[str], machine: str) -> str:
    """How this CPU's integer kernels add uint8 x int8 products: ``"int32"`` (exact for any codes) or
    ``"int16-pairs"`` (x86 without VNNI: neighbouring products summed in a saturating 16-bit lane)."""
    features = set(features)
    if machine.lower() in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "int32" if features & {"avx512_vnni", "avx_vnni", "amx_int8"} else "int16-pairs"
    return "int32"


def cpu_info() -> dict:
    """The CPU model, its int8-relevant features, the kind of int8 dot product they give, and the ONNX Runtime
    version: where a parity check ran (report.json, validation.json, benchmarks)."""
    model, flags = _cpuinfo()
    machine = platform.machine()
    features = {f for f in INT8_FEATURES if f in flags}
    seen = _process_features()
    masked = [f for f, ok in seen.items() if not ok and f in features]
    if masked:  # /proc/cpuinfo describes the host, not the CPU this process runs on (an emulator): trust CPUID
        features = {f for f in features if seen.get(f, False)}
    features |= {f for f, ok in seen.items() if ok}
    info = {"model": model or platform.processor() or machine, "machine": machine,
            "features": sorted(features), "int8_dot": int8_dot_kind(features, machine),
            "emulated_or_masked": bool(masked)}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def describe(info: dict) -> str:
    """One line: ``AMD EPYC (x86_64; avx2 avx512_vnni ...): 32-bit int8 dot products, ONNX Runtime 1.31.1``."""
    kind = {"int32": "32-bit int8 dot products",
            "int16-pairs": "16-bit int8 pair sums, no VNNI"}.get(info.get("int8_dot"), info.get("int8_dot"))
    feats = " ".join(info.get("features") or []) or "no int8 features"
    ort = f", ONNX Runtime {info['onnxruntime']}" if info.get("onnxruntime") else ""
    emulated = f"emulated by {info['emulated_by']} on " if info.get("emulated_by") else ""
    return f"{emulated}{info.get('model')} ({info.get('machine')}; {feats}): {kind}{ort}"
