"""TensorRT back-end: build an engine from a tensorrt-profile ONNX graph on this device, cache it, run it.

``tensorrt`` (and CUDA through torch) are imported only when this runtime is used. Engines are not portable across
GPUs or TensorRT versions, so the cache key holds the ONNX file's hash, the TensorRT version, the GPU name and the
batch range. Written against TensorRT 10/11's documented Python API (named I/O tensors, ``execute_async_v3``;
strong typing, so the Q/DQ graph sets every precision). **Not exercised on the machines this project is developed
on** (TensorRT cannot be installed there; see README): its tests are marked ``tensorrt`` and skip without it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np

from ..errors import ExportError
from .base import Runtime


def engine_cache_dir() -> Path:
    return Path(os.environ.get("DFQ_DEPLOY_CACHE", Path.home() / ".cache" / "dfq-deploy")) / "trt"


class TensorRTRuntime(Runtime):
    name = "tensorrt"

    def __init__(self, onnx_path: str | Path, threads: int | None = None, max_batch: int = 500,
                 workspace_mib: int = 1024):
        super().__init__()
        self.onnx_path = Path(onnx_path)
        self.max_batch = max_batch
        self.workspace_mib = workspace_mib
        self.engine = self.context = None

    @classmethod
    def is_available(cls) -> bool:
        # find_spec does not import the package (importing tensorrt loads libnvinfer, which may be absent)
        if importlib.util.find_spec("tensorrt") is None:
            return False
        import torch

        return torch.cuda.is_available()

    @classmethod
    def unavailable_reason(cls) -> tuple[str, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return ("TensorRT is not installed on this machine (the `tensorrt` Python package is missing)",
                    "build and run the engine on the target device (e.g. a Jetson with JetPack), or use "
                    "--target onnxruntime")
        return ("TensorRT is installed but no CUDA GPU is visible", "run on a machine with an NVIDIA GPU")

    # -- engine build -------------------------------------------------------------------------------------------
    def build(self) -> bytes:
        """Parse the ONNX graph and build a serialized engine (cached). Raises ExportError with the parser's errors."""
        import tensorrt as trt
        import torch

        data = self.onnx_path.read_bytes()
        key = hashlib.sha256(data + f"|{trt.__version__}|{torch.cuda.get_device_name()}|{self.max_batch}".encode())
        cached = engine_cache_dir() / f"{key.hexdigest()[:32]}.plan"
        if cached.is_file():
            return cached.read_bytes()
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 0
        if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):  # TensorRT 10; always on (ignored) in 11
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(data):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(f"TensorRT's ONNX parser refused {self.onnx_path}: {errors}",
                              hint="export with --profile tensorrt and check it with `dfq-deploy inspect --runtime "
                                   "tensorrt`")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mib << 20)
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            inp = network.get_input(i)
            chw = tuple(inp.shape)[1:]
            profile.set_shape(inp.name, (1, *chw), (min(64, self.max_batch), *chw), (self.max_batch, *chw))
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ExportError(f"TensorRT could not build an engine from {self.onnx_path} (see its log above)")
        plan = bytes(plan)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(plan)
        os.replace(tmp, cached)
        return plan

    def _activate(self) -> None:
        import tensorrt as trt

        plan = self.build()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)

    def _deactivate(self) -> None:
        self.context = self.engine = self._runtime = None

    def _infer(self, x: np.ndarray) -> np.ndarray:
        import torch

        outs = []
        for i in range(0, len(x), self.max_batch):
            xb = torch.from_numpy(x[i:i + self.max_batch]).cuda()
            self.context.set_input_shape(self.input_name, tuple(xb.shape))
            y = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32,
                            device="cuda")
            self.context.set_tensor_address(self.input_name, xb.data_ptr())
            self.context.set_tensor_address(self.output_name, y.data_ptr())
            stream = torch.cuda.current_stream()
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            stream.synchronize()
            outs.append(y.cpu().numpy())
        return np.concatenate(outs)
