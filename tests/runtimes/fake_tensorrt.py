"""A small stand-in for the ``tensorrt`` package, injected by tests only (never shipped): the parts of TensorRT 10's
Python API that dfq_deploy.runtimes.trt calls, with plans that record which version and GPU built them, so the logic
around the library (cache keys, rebuilds, records, typed errors) is tested where TensorRT cannot be installed.
Nothing here runs a network: engines built by it cannot execute."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types

MAGIC = b"FAKE-TRT-PLAN\n"


def install(monkeypatch, version: str = "10.3.0", gpu: str = "Orin (nvgpu)", cc: str = "8.7"):
    """Put a fake ``tensorrt`` in ``sys.modules`` and a fake GPU identity in dfq_deploy; returns the fake module."""
    import dfq_deploy.runtimes.trt as trt_mod

    m = types.ModuleType("tensorrt")
    m.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    m.__version__ = version
    m.builds = []               # (flags, workspace bytes, profile shapes) of every build
    m.parse_errors = []         # set to make the parser refuse the graph
    m.build_fails = False       # set to make the builder return None

    class Logger:
        WARNING, ERROR = 2, 1

        def __init__(self, level=None):
            self.level = level

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 5

    class MemoryPoolType:
        WORKSPACE = "workspace"

    class TensorIOMode:
        INPUT, OUTPUT = "input", "output"

    class _Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class _Network:
        def __init__(self, flags):
            self.flags, self.inputs = flags, []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse(self, data: bytes) -> bool:
            import onnx

            if m.parse_errors:
                self.errors = list(m.parse_errors)
                return False
            model = onnx.load_from_string(data)
            for inp in model.graph.input:
                dims = tuple(d.dim_value or -1 for d in inp.type.tensor_type.shape.dim)
                self.network.inputs.append(_Tensor(inp.name, dims))
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class _Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (lo, opt, hi)

    class _Config:
        def __init__(self):
            self.pools, self.profiles = {}, []

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return _Network(flags)

        def create_builder_config(self):
            return _Config()

        def create_optimization_profile(self):
            return _Profile()

        def build_serialized_network(self, network, config):
            if m.build_fails:
                return None
            shapes = {k: v for p in config.profiles for k, v in p.shapes.items()}
            m.builds.append((network.flags, config.pools.get(MemoryPoolType.WORKSPACE), shapes))
            return MAGIC + json.dumps({"version": m.__version__, "gpu": m.gpu, "n": len(m.builds)}).encode()

    class _Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["input", "output"][i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == "input" else TensorIOMode.OUTPUT

        def create_execution_context(self):
            return object()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan: bytes):
            if not bytes(plan).startswith(MAGIC):
                return None
            header = json.loads(bytes(plan)[len(MAGIC):])
            return _Engine() if header["version"] == m.__version__ and header["gpu"] == m.gpu else None

    for obj in (Logger, NetworkDefinitionCreationFlag, MemoryPoolType, TensorIOMode, OnnxParser, Builder, Runtime):
        setattr(m, obj.__name__, obj)
    m.gpu, m.cc = gpu, cc
    monkeypatch.setitem(sys.modules, "tensorrt", m)
    monkeypatch.setattr(trt_mod, "device_identity", lambda: {"gpu": m.gpu, "compute_capability": m.cc})
    return m
