"""Load an ONNX file a user hands us without trusting the paths inside it.

An ONNX model may keep tensors in external files named by relative paths in the model itself. A crafted model can
name ``/etc/passwd`` or ``../../secret``; :func:`load_onnx_safely` refuses any external location that is absolute
or resolves outside the model's own folder before anything is read.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from .errors import ModelError


def _tensors(model: onnx.ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield a.t
            elif a.type == onnx.AttributeProto.TENSORS:
                yield from a.tensors


def load_onnx_safely(path: str | Path) -> onnx.ModelProto:
    """``onnx.load`` with every external-data location checked to stay inside the model's folder.

    Raises:
        ModelError: missing or unreadable file, or an external-data path that escapes the model's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX model {path} not found", hint="give the path of an .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and others for non-ONNX bytes
        raise ModelError(f"{path} is not a readable ONNX model: {type(e).__name__}: {e}",
                         hint="give an .onnx file exported by dfq-deploy (or another exporter); the file may be "
                              "truncated") from e
    if not model.graph.node:
        raise ModelError(f"{path} holds no ONNX graph ({path.stat().st_size} bytes)",
                         hint="give an .onnx file exported by dfq-deploy (or another exporter)")
    if model.ir_version > onnx.IR_VERSION:
        raise ModelError(f"{path} is ONNX IR version {model.ir_version}, newer than this onnx {onnx.__version__} "
                         f"reads (IR {onnx.IR_VERSION})", hint="upgrade onnx, or export with an older opset / IR")
    base = path.resolve().parent
    external = [t for t in _tensors(model) if uses_external_data(t)]
    for t in external:
        location = ExternalDataInfo(t).location
        target = (base / location).resolve()
        if Path(location).is_absolute() or base not in (target, *target.parents) or not target.is_file():
            raise ModelError(f"{path}: tensor {t.name!r} points to external data {location!r} outside the model's "
                             "folder (or missing)", hint="only load models whose external data sits beside them")
    if external:
        onnx.load_external_data_for_model(model, str(base))
    return model
