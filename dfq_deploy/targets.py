"""Deployment targets, in one registry: the export profile each needs, the runtime that runs it, and what it asks
of the quantization scheme. The CLI's choices (`--target`, `--profile`, `inspect --runtime`) read it."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Target:
    name: str
    profile: str                       # export profile (dfq_deploy.export.PROFILES)
    runtime: str                       # runtime registry name (dfq_deploy.runtimes.RUNTIMES)
    trt_compatible: bool = False       # the scheme must use TensorRT's symmetric signed 8-bit-storable form
    # where the target's runtime is missing here, parity is checked in this runtime on the same graph (it computes
    # the same function); the report says the target's own engine was not built and why
    stand_in_runtime: str | None = None


TARGETS: dict[str, Target] = {
    "onnxruntime": Target("onnxruntime", profile="onnxruntime", runtime="onnxruntime"),
    "tensorrt": Target("tensorrt", profile="tensorrt", runtime="tensorrt", trt_compatible=True,
                       stand_in_runtime="onnxruntime"),
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ConfigError(f"unknown target {name!r}", hint=f"use one of {', '.join(TARGETS)}")
    return TARGETS[name]
