"""TensorRT back-end: build an engine from a tensorrt-profile ONNX graph on the device that runs it, cache it, run it.

Three separate steps, each usable alone:

- :func:`build_engine` parses the ONNX graph and builds a serialized engine (a *plan*) with :class:`EngineOptions`;
- :func:`load_or_build` keeps plans in a cache keyed by everything the plan depends on (the ONNX file's sha256,
  every build option including all profile shapes, the GPU's name and compute capability, the TensorRT version).
  A cached plan is used only when its side-car record matches this device and TensorRT, and TensorRT deserializes
  it; otherwise it is rebuilt, never used. ``dfq-deploy compile`` (:func:`compile_engine`) writes a plan and its
  record to a path of the user's choice, for boards that build once and run many times;
- :class:`TensorRTRuntime` runs a plan (a ``.plan`` file, or the cache's plan for an ``.onnx``).

``tensorrt`` (and CUDA through torch) are imported only when this runtime is used. Written against TensorRT
10/11's documented Python API (named I/O tensors, ``execute_async_v3``; strong typing, so the Q/DQ graph sets every
precision). **Not run against a real TensorRT** on the machines this project is developed on (TensorRT cannot be
installed there; docs/jetson.md): the logic around the library is tested with a small fake ``tensorrt`` module
(tests/runtimes/fake_tensorrt.py), and the real-library tests are marked ``tensorrt`` and skip without it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ExportError, ModelError, RuntimeUnavailableError
from ..files import atomic_write, file_sha256
from .base import Runtime, RuntimeOptions

log = logging.getLogger("dfq_deploy")

PLAN_RECORD_FORMAT = 1


class EngineError(RuntimeUnavailableError):
    """A TensorRT plan cannot run here (another GPU or TensorRT version, corrupt) or its execution failed."""


@dataclass(frozen=True)
class EngineOptions:
    """Every option an engine build depends on; all of them are part of the cache key."""

    workspace_mib: int = 1024  # builder scratch memory (MiB); a Jetson Nano-class board may need less
    min_batch: int = 1         # the optimisation profile's batch range: the engine accepts min..max
    opt_batch: int = 64        # the batch TensorRT tunes its kernels for
    max_batch: int = 500

    def __post_init__(self):
        values = (self.workspace_mib, self.min_batch, self.opt_batch, self.max_batch)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise ConfigError(f"engine options must be whole numbers, got {asdict(self)}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch <= 65_536:
            raise ConfigError(f"engine batch range must satisfy 1 <= min {self.min_batch} <= opt {self.opt_batch} "
                              f"<= max {self.max_batch} <= 65536", hint="e.g. --batch 1,64,500")
        if not 16 <= self.workspace_mib <= 1 << 20:
            raise ConfigError(f"workspace_mib={self.workspace_mib} must be between 16 and {1 << 20}",
                              hint="e.g. --workspace-mib 1024")

    def shapes(self, chw: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes of the optimisation profile."""
        return (self.min_batch, *chw), (self.opt_batch, *chw), (self.max_batch, *chw)


def engine_cache_dir() -> Path:
    return Path(os.environ.get("DFQ_DEPLOY_CACHE", Path.home() / ".cache" / "dfq-deploy")) / "trt"


def _import_trt():
    if importlib.util.find_spec("tensorrt") is None:
        raise RuntimeUnavailableError(*TensorRTRuntime.unavailable_reason())
    import tensorrt as trt

    return trt


def device_identity() -> dict:
    """The GPU an engine is built for: ``{"gpu": name, "compute_capability": "8.7"}``.

    Raises:
        RuntimeUnavailableError: no CUDA GPU is visible.
    """
    import torch

    if not torch.cuda.is_available():
        raise RuntimeUnavailableError("TensorRT needs a CUDA GPU and none is visible",
                                      hint="run on the device (e.g. the Jetson) with its GPU enabled")
    major, minor = torch.cuda.get_device_capability()
    return {"gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}


def build_identity(trt_version: str, identity: dict) -> dict:
    """What a plan must match to be used: the TensorRT version and the GPU."""
    return {"tensorrt": trt_version, **identity}


def _trt_here():
    """(the tensorrt module, this device's build identity)."""
    trt = _import_trt()
    return trt, build_identity(trt.__version__, device_identity())


def engine_key(onnx_sha256: str, options: EngineOptions, ident: dict) -> str:
    """The cache key: a hash of the ONNX file's sha256, every build option and the build identity."""
    blob = json.dumps({"onnx_sha256": onnx_sha256, "options": asdict(options), **ident}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def build_engine(onnx_path: str | Path, options: EngineOptions = EngineOptions()) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine on this GPU (no cache).

    Raises:
        RuntimeUnavailableError: no TensorRT or no GPU here.
        ModelError: the ONNX file cannot be read.
        ExportError: TensorRT's parser refuses the graph, or the builder fails.
    """
    from ..onnx_file import load_onnx_safely

    trt = _import_trt()
    onnx_path = Path(onnx_path)
    data = load_onnx_safely(onnx_path).SerializeToString()  # external data checked and inlined
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):  # TensorRT 10; always on (ignored) in 11
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT's ONNX parser refused {onnx_path}: {errors or 'no reason given'}",
                          hint="export with --profile tensorrt and check it with `dfq-deploy inspect --runtime "
                               "tensorrt`")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        profile.set_shape(inp.name, *options.shapes(tuple(inp.shape)[1:]))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path} (its log above says why)",
                          hint="try a larger --workspace-mib or a smaller --batch range")
    return bytes(plan)


def _deserialize(trt, plan: bytes):
    """The engine of ``plan``, or None when TensorRT refuses it (another version or GPU, truncated, not a plan)."""
    try:
        return trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(plan)
    except Exception:  # noqa: BLE001 - bindings raise various types for bad bytes; None is the documented failure
        return None


def unusable_reason(plan: bytes, record: dict | None, ident: dict, trt=None) -> str | None:
    """Why ``plan`` (with its side-car ``record``) must not run here, or None when it can."""
    if record is not None:
        for field in ("tensorrt", "gpu", "compute_capability"):
            if record.get(field) != ident.get(field):
                return f"built for {field} {record.get(field)!r}, this device has {ident.get(field)!r}"
        if record.get("plan_sha256") != hashlib.sha256(plan).hexdigest():
            return "the plan's bytes do not match its record (truncated or replaced)"
    if _deserialize(trt or _import_trt(), plan) is None:
        return "TensorRT could not deserialize it"
    return None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)


def _record(onnx_path: Path, onnx_sha: str, options: EngineOptions, ident: dict, plan: bytes) -> dict:
    return {"format": PLAN_RECORD_FORMAT, "onnx": str(onnx_path), "onnx_sha256": onnx_sha, "options": asdict(options),
            **ident, "plan_sha256": hashlib.sha256(plan).hexdigest(), "plan_bytes": len(plan)}


def load_or_build(onnx_path: str | Path, options: EngineOptions = EngineOptions(), cache_dir: Path | None = None
                  ) -> tuple[bytes, str]:
    """The plan for ``onnx_path`` on this device: from the cache when a usable one is there, else built and cached.

    Returns (plan, how): ``"cached"``, ``"built"`` or ``"rebuilt (<why the cached plan was not used>)"``.
    """
    trt, ident = _trt_here()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelError(f"ONNX model {onnx_path} not found", hint="give the path of an .onnx file")
    onnx_sha = file_sha256(onnx_path)
    key = engine_key(onnx_sha, options, ident)
    cache = cache_dir or engine_cache_dir()
    plan_path, record_path = cache / f"{key}.plan", cache / f"{key}.json"
    how = "built"
    if plan_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            record = {}  # a plan without a readable record is not trusted
        cached = plan_path.read_bytes()
        why = unusable_reason(cached, record, ident, trt)
        if why is None:
            return cached, "cached"
        how = f"rebuilt (cached plan {plan_path.name} not used: {why})"
        log.warning("TensorRT engine cache: %s", how)
    plan = build_engine(onnx_path, options)
    _write_atomic(plan_path, plan)
    _write_atomic(record_path, json.dumps(_record(onnx_path, onnx_sha, options, ident, plan), indent=2).encode())
    return plan, how


def compile_engine(onnx_path: str | Path, out: str | Path, options: EngineOptions = EngineOptions(),
                   overwrite: bool = False) -> dict:
    """``dfq-deploy compile``: build (or take from the cache) the plan of ``onnx_path`` for this device and write it to
    ``out`` with its record ``out + ".json"`` (TensorRT version, GPU, compute capability, options, hashes), which
    :class:`TensorRTRuntime` checks before running it. Returns the record, with ``how`` the plan was obtained."""
    from ..config import check_output_file

    if not Path(onnx_path).is_file():
        raise ModelError(f"ONNX model {onnx_path} not found", hint="give the path of a tensorrt-profile .onnx file")
    out = check_output_file(out, "--out", overwrite=overwrite)
    plan, how = load_or_build(onnx_path, options)
    trt, ident = _trt_here()
    onnx_path = Path(onnx_path)
    record = _record(onnx_path.resolve(), file_sha256(onnx_path), options, ident, plan)
    _write_atomic(out, plan)
    _write_atomic(Path(f"{out}.json"), json.dumps(record, indent=2).encode())
    return {**record, "how": how, "plan": str(out)}


class TensorRTRuntime(Runtime):
    """Runs a TensorRT plan: ``model`` is a ``.plan`` from ``dfq-deploy compile`` (checked against its record and
    this device, never rebuilt) or an ``.onnx`` (its plan from :func:`load_or_build`)."""

    name = "tensorrt"

    def __init__(self, model: str | Path, threads: int | None = None, max_batch: int | None = None,
                 workspace_mib: int | None = None, options: EngineOptions | None = None):
        super().__init__()
        self.model = Path(model)
        opts = options or EngineOptions()
        if max_batch is not None or workspace_mib is not None:
            mb = max_batch or opts.max_batch
            opts = EngineOptions(workspace_mib=workspace_mib or opts.workspace_mib, min_batch=1,
                                 opt_batch=min(opts.opt_batch, mb), max_batch=mb)
        self.options = opts
        self.engine = self.context = self._runtime = None
        self.how = None

    @classmethod
    def from_options(cls, model, options: RuntimeOptions = RuntimeOptions()) -> Runtime:
        """The plan ``options.engine`` where given, else ``model``'s (built or cached)."""
        return cls(options.engine if options.engine else model, threads=options.threads)

    @classmethod
    def is_available(cls) -> bool:
        # find_spec does not import the package (importing tensorrt loads libnvinfer, which may be absent)
        if importlib.util.find_spec("tensorrt") is None:
            return False
        try:
            device_identity()
        except RuntimeUnavailableError:
            return False
        return True

    @classmethod
    def unavailable_reason(cls) -> tuple[str, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return ("TensorRT is not installed on this machine (the `tensorrt` Python package is missing)",
                    "build and run the engine on the target device (e.g. a Jetson with JetPack: docs/jetson.md), or "
                    "use --target onnxruntime")
        return ("TensorRT is installed but no CUDA GPU is visible", "run on a machine with an NVIDIA GPU")

    def _plan(self) -> bytes:
        if self.model.suffix != ".plan":
            plan, self.how = load_or_build(self.model, self.options)
            return plan
        trt, ident = _trt_here()
        if not self.model.is_file():
            raise ModelError(f"TensorRT plan {self.model} not found",
                             hint="build it on this device with `dfq-deploy compile MODEL.onnx --target tensorrt`")
        plan = self.model.read_bytes()
        record_path = Path(f"{self.model}.json")
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            raise EngineError(f"{self.model} has no readable record {record_path.name}: its TensorRT version and GPU "
                              "cannot be checked", hint="rebuild it here with `dfq-deploy compile`") from None
        why = unusable_reason(plan, record, ident, trt)
        if why:
            raise EngineError(f"TensorRT plan {self.model} cannot run here: {why}",
                              hint=f"engines are not portable: rebuild it on this device with `dfq-deploy compile "
                                   f"{record.get('onnx', 'MODEL.onnx')} --target tensorrt --overwrite`")
        self.options = EngineOptions(**record.get("options", {}))
        self.how = "plan file"
        return plan

    def _activate(self) -> None:
        trt = _import_trt()
        plan = self._plan()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineError(f"TensorRT could not deserialize the plan of {self.model}",
                              hint="rebuild it on this device with `dfq-deploy compile`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)

    def _deactivate(self) -> None:
        self.context = self.engine = self._runtime = None

    def _infer(self, x: np.ndarray) -> np.ndarray:
        import torch

        outs = []
        step = self.options.max_batch
        for i in range(0, len(x), step):
            xb = torch.from_numpy(x[i:i + step]).cuda()
            if len(xb) < self.options.min_batch:  # pad a short last batch up to the profile's minimum
                xb = torch.cat([xb, xb.new_zeros(self.options.min_batch - len(xb), *xb.shape[1:])])
            self.context.set_input_shape(self.input_name, tuple(xb.shape))
            y = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32,
                            device="cuda")
            self.context.set_tensor_address(self.input_name, xb.data_ptr())
            self.context.set_tensor_address(self.output_name, y.data_ptr())
            stream = torch.cuda.current_stream()
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise EngineError(f"TensorRT failed to execute the engine of {self.model} on a batch of "
                                  f"{len(xb)} (its log above says why)",
                                  hint="check the GPU's memory and the batch range the plan was built for")
            stream.synchronize()
            outs.append(y.cpu().numpy()[: min(step, len(x) - i)])
        return np.concatenate(outs)
