"""Model zoo: build float models by name and load weights safely (safetensors or ``weights_only`` torch files).

Names:
    ``resnet20``/``resnet32``/... or ``resnet`` (CIFAR-style, kwargs ``depth``, ``width``, ``in_channels``,
    ``num_classes``), ``mobilenetv2`` (a MobileNetV2 for small images, kwargs ``width``, ``in_channels``,
    ``num_classes``) and ``torchvision:<name>`` for any torchvision classification model (kwargs forwarded to
    ``torchvision.models.get_model``; weights come from a user file, never from a hub).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError

SHIPPED_DIR = Path(__file__).parent / "teachers"
SHIPPED_TEACHER = SHIPPED_DIR / "resnet20_fmnist.json"


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build an untrained float model by name (see module docstring). Raises ModelError for unknown names."""
    m = re.fullmatch(r"resnet(\d+)?", arch)
    if m:
        from .resnet_cifar import CifarResNet

        if m.group(1):
            kwargs.setdefault("depth", int(m.group(1)))
        try:
            return CifarResNet(**kwargs)
        except TypeError as e:
            raise ModelError(f"bad arguments for {arch}: {e}", hint="use depth, width, in_channels, num_classes") from e
    if arch == "mobilenetv2":
        from .mobilenet_small import SmallMobileNetV2

        try:
            return SmallMobileNetV2(**kwargs)
        except TypeError as e:
            raise ModelError(f"bad arguments for {arch}: {e}", hint="use width, in_channels, num_classes") from e
    if arch.startswith("torchvision:"):
        name = arch.split(":", 1)[1]
        import torchvision

        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ModelError(f"torchvision has no classification model {name!r}",
                             hint="see torchvision.models.list_models(), e.g. torchvision:resnet18")
        try:
            return torchvision.models.get_model(name, weights=None, **kwargs)
        except (TypeError, ValueError) as e:
            raise ModelError(f"bad arguments for {arch}: {e}") from e
    raise ModelError(f"unknown model {arch!r}", hint="use resnet20 (CIFAR-style), mobilenetv2 or torchvision:<name>")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file without unpickling arbitrary objects (safetensors, or torch with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} not found", hint="pass an existing .safetensors or .pt file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own SafetensorError / OSError
            raise ModelError(f"cannot read safetensors file {path}: {e}",
                             hint="the file is truncated or not safetensors: copy it again, or re-run "
                                  "`dfq-deploy pretrain`") from e
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses pickled code: say so instead of a traceback
        raise ModelError(f"cannot read {path} as a weights-only torch file: {e}",
                         hint="save a plain state_dict, or convert to .safetensors") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{path} does not hold a state_dict of tensors")
    return sd


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict into ``model``; every key must match (a mismatch is a user error, not a warning)."""
    sd = read_state_dict(path)
    if getattr(sd, "_metadata", None) is None:
        # safetensors keeps no per-module version numbers, and a module whose loading depends on its version
        # (torchvision's MNASNet) refuses a state dict without one: the weights are this code's own version's
        from collections import OrderedDict

        sd = OrderedDict(sd)
        sd._metadata = {name: {"version": m._version} for name, m in model.named_modules()  # type: ignore[attr-defined]
                        if getattr(m, "_version", None) is not None}
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        raise ModelError(f"weights in {path} do not fit the model: {' '.join(first)}",
                         hint="check the architecture arguments (depth, width, channels, classes)") from e
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # a NaN / Inf weight poisons every quantizer scale computed from it: say where, before any work
        raise ModelError(f"weights in {path} hold NaN or infinite values ({', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''})",
                         hint="the checkpoint is corrupt or diverged in training: use a checkpoint with finite weights")
    return model


# what one Conv/Gemm output value costs in the recipes' training passes, in multiply-accumulates: quantizers,
# normalisations, activations and their gradients are elementwise and bound by memory traffic, so a model of many
# thin layers (depthwise convolutions) costs far more time than its MACs say. Fitted to forward-backward timings on
# 2 CPU cores (docs/benchmarks.md, "Your own model at 224x224")
ACTIVATION_MACS = 250


@dataclass(frozen=True)
class ForwardCost:
    """What one forward pass on one input costs: billions of multiply-accumulates (``gmac``) and billions of values
    written by convolution and linear layers (``gvalues``)."""

    gmac: float
    gvalues: float

    def work(self, per_value: float = ACTIVATION_MACS) -> float:
        """Billions of MAC-equivalents: the MACs plus ``per_value`` for each value written. The unit of the
        recipes' compute budget (``budget_gmac``)."""
        return self.gmac + per_value * self.gvalues


def forward_cost(model: nn.Module, input_shape) -> ForwardCost:
    """The cost of one forward pass of ``model`` on one zero input (torch's FLOP counter for the MACs, forward hooks
    on the Conv/Linear modules for the values)."""
    from torch.utils.flop_counter import FlopCounterMode

    outputs = [0]

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            outputs[0] += output[0].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return ForwardCost(counter.get_total_flops() / 2e9, outputs[0] / 1e9)


def gmac_per_image(model: nn.Module, input_shape) -> float:
    """Multiply-accumulates of one forward pass on one input, in billions."""
    return forward_cost(model, input_shape).gmac


_ABSENT = object()


def input_spec_problems(input_shape=_ABSENT, mean=_ABSENT, std=_ABSENT, class_names=_ABSENT) -> list[str]:
    """What is wrong with how a model is fed (a model card's fields, or the same fields in an exported model's
    metadata): one line per problem, empty when they are usable. A field left out is not checked."""
    def numbers(v, positive=False):
        return isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                          and math.isfinite(x) and (x > 0 or not positive) for x in v)

    problems = []
    shape_ok = isinstance(input_shape, (list, tuple)) and len(input_shape) == 3 and all(
        isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 4096 for x in input_shape)
    if input_shape is not _ABSENT and not shape_ok:
        problems.append(f"input_shape must be [channels, height, width] of positive integers, not {input_shape!r}")
    if mean is not _ABSENT and not numbers(mean) or std is not _ABSENT and not numbers(std, positive=True):
        problems.append("mean and std must be lists of finite numbers, std > 0")
    elif shape_ok and mean is not _ABSENT and len(mean) not in (1, input_shape[0]):
        problems.append(f"mean has {len(mean)} values for {input_shape[0]} input channels")
    if class_names is not _ABSENT and not (isinstance(class_names, (list, tuple)) and class_names
                                           and all(isinstance(c, str) for c in class_names)):
        problems.append("class_names must be a non-empty list of strings")
    return problems


@dataclass
class ModelCard:
    """What a float model is and how to feed it; stored as JSON beside the weights."""

    arch: str
    arch_kwargs: dict[str, Any]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    weights: str = ""
    test_accuracy: float | None = None
    eval_data: str | None = None
    seed: int | None = None
    command: str | None = None
    train: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, path: str | Path) -> "ModelCard":
        path = Path(path)
        hint = "a card is the JSON written by `dfq-deploy pretrain`"
        try:
            if path.stat().st_size > 1 << 20:
                raise ModelError(f"model card {path} is over 1 MiB: not a model card", hint=hint)
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ModelError(f"model card {path} must hold a JSON object, not {type(raw).__name__}", hint=hint)
            card = cls(**raw)
        except (OSError, ValueError, TypeError) as e:  # ValueError: bad JSON and non-UTF-8 bytes alike
            raise ModelError(f"cannot read model card {path}: {e}", hint=hint) from e
        card._check(path, hint)
        card.input_shape = tuple(card.input_shape)
        card.mean, card.std, card.class_names = tuple(card.mean), tuple(card.std), tuple(card.class_names)
        return card

    def _check(self, path: Path, hint: str) -> None:
        """Field types and ranges, so a malformed card is named here rather than failing later."""
        problems = []
        if not isinstance(self.arch, str):
            problems.append("arch must be a name")
        if not isinstance(self.arch_kwargs, dict):
            problems.append("arch_kwargs must be an object")
        problems += input_spec_problems(self.input_shape, self.mean, self.std, self.class_names)
        if not isinstance(self.weights, str):
            problems.append("weights must be a file name")
        if problems:
            raise ModelError(f"model card {path}: " + "; ".join(problems), hint=hint)


def shipped_teachers() -> list[str]:
    """The names of the teachers shipped with the package (``--teacher NAME``)."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.json"))


def teacher_card_path(card: str | Path | None) -> Path:
    """The model card ``card`` names: a path, or the name of a shipped teacher (``mobilenetv2_fmnist``) where no
    file of that name exists; None is the default shipped teacher."""
    if card is None:
        return SHIPPED_TEACHER
    path = Path(card)
    if not path.exists() and path.name == str(card) and (SHIPPED_DIR / f"{path.name}.json").is_file():
        return SHIPPED_DIR / f"{path.name}.json"
    return path


def load_teacher(card_path: str | Path | None = None) -> tuple[nn.Module, ModelCard]:
    """Load a float teacher from its model card (a path or a shipped teacher's name, :func:`teacher_card_path`;
    default: the shipped ResNet-20), in eval mode."""
    card_path = teacher_card_path(card_path)
    if not card_path.is_file():
        raise ModelError(f"model card {card_path} not found",
                         hint="pass the .json written by `dfq-deploy pretrain`, a shipped teacher's name ("
                              f"{', '.join(shipped_teachers())}), or omit --teacher for the default one")
    card = ModelCard.from_json(card_path)
    model = build_model(card.arch, **card.arch_kwargs)
    weights = Path(card.weights)
    if not weights.is_absolute():
        weights = card_path.parent / weights
    load_weights(model, weights)
    return model.eval(), card
