"""Export a trained Brevitas student to QDQ ONNX for a runtime profile.

The ``onnxruntime`` profile applies what ONNX Runtime's CPU QDQ fusion needs to run every Conv/Gemm as an integer
kernel (see docs/deploy.md): Brevitas QCDQ export with ``dynamo=False`` (the dynamo path refuses Int32Bias) and
``keep_initializers_as_inputs=False`` (weights listed as graph inputs block constant folding), BN merged before
training (done by :func:`dfq_deploy.quant.quantize_model`), int32 bias, and signed activations moved to uint8.

The ``tensorrt`` profile rewrites the same export into TensorRT's explicit-quantization form (symmetric signed int8,
float bias, weight Clips folded, activation Clips as float Clips before QuantizeLinear; see
:mod:`dfq_deploy.export.passes`) and refuses to write a graph that fails :func:`check_tensorrt_rules`.
Both profiles compute the same function as the trained model.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx
import torch

from .. import __version__
from ..errors import ConfigError, ExportError
from ..files import atomic_path
from .inspect import layer_bits
from .graph import set_metadata
from .ort_passes import (pad_conv_input_channels, pools_outside_integer_range, quantize_pool_outputs,
                         relu_int8_to_uint8, shift_signed_activations_to_uint8, unsigned_weights_where_pairs_saturate)
from .pair_sums import check_pair_sums
from .passes import requantize_grid_preserving_ops
from .trt_rules import TensorRTCheck, check_tensorrt_rules
from .trt_passes import (UnrepresentableActivation, activations_to_signed_float_clip, fold_weight_clips_to_float_qdq,
                         int32_bias_to_float)


def _onnxruntime_profile(model: onnx.ModelProto, portable: bool) -> tuple[dict, None]:
    done = {"grid_preserving_outputs_requantized": requantize_grid_preserving_ops(model),
            "relu_int8_to_uint8": relu_int8_to_uint8(model)}
    done["signed_activations_moved_to_uint8"] = shift_signed_activations_to_uint8(model)
    done["pool_outputs_quantized"] = quantize_pool_outputs(model)  # after the shift: it copies the final Q
    done["pools_kept_float"] = pools_outside_integer_range(model)
    # after the shift (the pair sums are bounded on the uint8 codes), before the padding (which keeps only
    # int8-weight convolutions on MLAS' symmetric path, and pads with each weight's own zero point)
    done["weights_moved_to_uint8"] = unsigned_weights_where_pairs_saturate(model) if portable else 0
    done["conv_input_channels_padded"] = pad_conv_input_channels(model)  # after the shift: pads with the uint8 zp
    return done, None


def _tensorrt_profile(model: onnx.ModelProto, portable: bool) -> tuple[dict, TensorRTCheck]:
    done = {"grid_preserving_outputs_requantized": requantize_grid_preserving_ops(model)}
    try:
        done.update(activations_to_signed_float_clip(model))
    except UnrepresentableActivation as e:
        raise ExportError(f"cannot export for TensorRT: {e}",
                          hint="8-bit activations after ReLU must be signed int8 for TensorRT: train with "
                               "--target tensorrt (QuantScheme(trt_compatible=True)); 7 bits or fewer always fit"
                          ) from e
    done["weight_clips_folded"] = fold_weight_clips_to_float_qdq(model)
    done["int32_biases_to_float"] = int32_bias_to_float(model)
    check = check_tensorrt_rules(model)
    if not check.ok:
        raise ExportError("the TensorRT profile still breaks TensorRT's Q/DQ rules: "
                          + "; ".join(str(v) for v in check.violations[:5]),
                          hint="this model has a layer pattern the tensorrt profile does not rewrite yet")
    return done, check


# profile name -> graph passes applied after the Brevitas export (model, portable); returns what each pass changed
# and, for the tensorrt profile, the rule check the graph passed
PROFILES: dict[str, Callable[[onnx.ModelProto, bool], tuple[dict, TensorRTCheck | None]]] = {"onnxruntime": _onnxruntime_profile,
                                                                 "tensorrt": _tensorrt_profile}


@dataclass
class ExportResult:
    path: Path
    profile: str
    passes: dict
    num_nodes: int
    tensorrt_rules: TensorRTCheck | None = None   # the tensorrt profile's rule check (the graph passed it)


def export_onnx(qmodel: torch.nn.Module, path: str | Path, input_shape: tuple[int, ...], profile: str = "onnxruntime",
                metadata: dict[str, str] | None = None, opset: int = 13, portable: bool = True) -> ExportResult:
    """Export ``qmodel`` (a Brevitas fake-quant model) as QDQ ONNX with a dynamic batch axis.

    Args:
        qmodel: the trained student, exactly as evaluated in PyTorch.
        path: destination ``.onnx``; written atomically (a failed export leaves nothing behind).
        input_shape: ``(C, H, W)`` of one input.
        profile: runtime profile (see :data:`PROFILES`).
        metadata: key/value strings stored in the model's ``metadata_props``.
        portable: the model must compute the same integers on every CPU (``QuantScheme.portable``, whose weights
            leave no 16-bit pair sum that can saturate). Should a layer still be able to (a model the scheme's rule
            does not foresee), the onnxruntime profile stores its weights as uint8 codes, exact everywhere. Recorded
            as ``dfq_deploy.portable``, which the parity gate holds the graph to. The tensorrt profile has no uint8
            weights (TensorRT wants symmetric int8): where its graph could saturate an x86 CPU without VNNI it is
            recorded as not portable (TensorRT's GPU kernels accumulate in int32; ONNX Runtime there stands in).

    Raises:
        ConfigError: unknown profile.
        ExportError: Brevitas export failed or the result fails ``onnx.checker``.
    """
    from brevitas.export import export_onnx_qcdq

    if profile not in PROFILES:
        raise ConfigError(f"unknown export profile {profile!r}", hint=f"use one of {sorted(PROFILES)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    qmodel = qmodel.eval()
    # the owner only, as the run directory's other files until its commit sets their final modes
    with atomic_path(path, mode=0o600) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.onnx's TracerWarnings on Brevitas internals are expected
            try:
                export_onnx_qcdq(qmodel, args=torch.zeros(1, *input_shape), export_path=str(tmp),
                                 opset_version=opset, dynamo=False, keep_initializers_as_inputs=False,
                                 input_names=["input"], output_names=["logits"],
                                 dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            except Exception as e:
                raise ExportError(f"Brevitas QCDQ export failed: {type(e).__name__}: {e}") from e
        model = onnx.load(tmp)
        bits = layer_bits(model)  # read before the profile's rewrites (the tensorrt one moves the Clips)
        passes, rules = PROFILES[profile](model, portable)
        if profile == "tensorrt":
            portable = portable and bool(check_pair_sums(model))
        set_metadata(model, {**(metadata or {}), "dfq_deploy.profile": profile, "dfq_deploy.version": __version__,
                             "dfq_deploy.layer_bits": json.dumps(bits),
                             "dfq_deploy.portable": json.dumps(bool(portable))})
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"exported graph fails onnx.checker: {e}") from e
        onnx.save(model, str(tmp))
    return ExportResult(path, profile, passes, len(model.graph.node), rules)
