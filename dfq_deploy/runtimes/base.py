"""The runtime interface (Polygraphy-style runners: activate / infer / deactivate) and its registry."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, RuntimeUnavailableError


@dataclass(frozen=True)
class RuntimeOptions:
    """How to construct a runtime, whichever it is: each back-end reads the fields it uses and ignores the others."""

    threads: int | None = None           # CPU threads (ONNX Runtime's intra-op threads); None: the runtime's default
    optimize: bool = True                # ONNX Runtime: graph optimisation ALL; False: none (the graph's semantics)
    engine: str | Path | None = None     # TensorRT: a plan from `dfq-deploy compile` to run instead of the .onnx's
    emulate_cpu: str | None = None       # ONNX Runtime: run on qemu's model of this CPU (runtimes.emulated)


class Runtime(ABC):
    """Runs a model on float32 NCHW batches and returns logits. Use as a context manager."""

    name = "runtime"

    def __init__(self):
        self.active = False

    @classmethod
    def from_options(cls, model, options: RuntimeOptions = RuntimeOptions()) -> "Runtime":
        """The runtime for ``model`` (an ``.onnx`` path, or the PyTorch model for ``torch``) built from ``options``.
        A back-end overrides it to read the options it uses."""
        return cls(model)

    @classmethod
    def is_available(cls) -> bool:
        """True when the back-end's packages import on this machine."""
        return True

    @classmethod
    def unavailable_reason(cls) -> tuple[str, str | None]:
        """(message, fix) shown when :meth:`is_available` is false."""
        return f"runtime {cls.name} is not available on this machine", None

    def activate(self) -> "Runtime":
        if not self.active:
            self._activate()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self) -> "Runtime":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run one batch. ``x`` must be float32 with 4 dimensions."""
        assert self.active, f"{self.name}: call activate() (or use `with`) before infer()"
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise ConfigError(f"{self.name}: expected an N x C x H x W batch, got shape {x.shape}")
        return self._infer(x)

    def _activate(self) -> None:  # noqa: B027 - optional hook: build sessions/engines here
        """Load what ``_infer`` needs (sessions, engines). Optional."""

    def _deactivate(self) -> None:  # noqa: B027 - optional hook
        """Release what ``_activate`` loaded. Optional."""

    @abstractmethod
    def _infer(self, x: np.ndarray) -> np.ndarray: ...


# name -> "module:Class", imported only when asked for
RUNTIMES = {
    "torch": "dfq_deploy.runtimes.torch_ref:TorchRuntime",
    "onnxruntime": "dfq_deploy.runtimes.ort:OnnxRuntime",
    "tensorrt": "dfq_deploy.runtimes.trt:TensorRTRuntime",
}


def get_runtime(name: str) -> type[Runtime]:
    """Return the runtime class for ``name``.

    Raises:
        ConfigError: unknown name.
        RuntimeUnavailableError: the back-end's packages are missing on this machine.
    """
    if name not in RUNTIMES:
        raise ConfigError(f"unknown runtime {name!r}", hint=f"use one of {', '.join(RUNTIMES)}")
    module, cls_name = RUNTIMES[name].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    if not cls.is_available():
        raise RuntimeUnavailableError(*cls.unavailable_reason())
    return cls


def make_runtime(name: str, model, options: RuntimeOptions = RuntimeOptions()) -> Runtime:
    """``get_runtime(name).from_options(model, options)``: the runtime ``name`` for ``model``, not yet active.

    Raises:
        ConfigError: unknown name.
        RuntimeUnavailableError: the back-end's packages are missing on this machine.
    """
    return get_runtime(name).from_options(model, options)


def find_runtime(name: str) -> tuple[type[Runtime] | None, str | None]:
    """(runtime class, None) when ``name``'s back-end is available here, else (None, why not).

    Raises:
        ConfigError: unknown name.
    """
    try:
        return get_runtime(name), None
    except RuntimeUnavailableError as e:
        return None, e.args[0]


def available_runtimes() -> list[str]:
    """Names of the runtimes whose packages import here."""
    return [name for name in RUNTIMES if find_runtime(name)[0] is not None]
