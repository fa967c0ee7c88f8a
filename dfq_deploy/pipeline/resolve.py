"""Stage 1, resolve: the target, the recipe and its options, the teacher and the evaluation data, checked before
any training starts; and :func:`preflight`, which runs this stage alone (``--dry-run``)."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path

import torch
import yaml

from ..config import config_from_dict
from ..device import device_name, resolve_device
from ..errors import ConfigError, ModelError
from ..quant.grid import grid_text
from ..rundir import check_run_dir_free
from ..targets import Target, get_target
from .config import TrainExportConfig, plain
from .context import Inputs

log = logging.getLogger("dfq_deploy")


def resolve(cfg: TrainExportConfig) -> Inputs:
    """Check the target, the recipe and its options, the teacher and the evaluation data; quantize the student."""
    from ..data import load_eval_set
    from ..models import load_teacher
    from ..models.zoo import teacher_card_path
    from ..quant import quantize_model
    from ..recipes import RECIPES

    target = get_target(cfg.target)
    device = resolve_device(cfg.device)
    runtime = _target_runtime(target)
    scheme = replace(cfg.scheme, trt_compatible=True) if target.trt_compatible else cfg.scheme
    if cfg.recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {cfg.recipe!r}", hint=f"use one of {', '.join(RECIPES)}")
    recipe_cls, recipe_fn = RECIPES[cfg.recipe]
    recipe_cfg = config_from_dict(recipe_cls, cfg.recipe_options, where=f"recipe {cfg.recipe}")
    card_path = teacher_card_path(cfg.teacher)
    teacher, card = load_teacher(card_path)
    _runs_at_its_size(teacher, card, card_path)
    recipe_cfg = _without_batchnorm(teacher, cfg.recipe, recipe_cfg)
    recipe_cfg, budget = _fit_budget(recipe_cfg, teacher, card, set(cfg.recipe_options))
    # quantized here, before any work: a model the quantizer cannot take (untraceable, attention) is refused now
    student = quantize_model(teacher, scheme)
    recipe_cfg = _with_card_pixel_range(recipe_cfg, card)
    eval_set = load_eval_set(cfg.eval_data, card.mean, card.std, limit=cfg.eval_limit, root=cfg.data_root,
                             input_shape=card.input_shape, class_names=card.class_names)
    if tuple(eval_set.images.shape[1:]) != tuple(card.input_shape):
        raise ConfigError(f"evaluation images are {tuple(eval_set.images.shape[1:])} ({cfg.eval_data}) but the "
                          f"teacher expects {tuple(card.input_shape)}",
                          hint="pick evaluation data of the teacher's size: --eval-data imagefolder:PATH (resized "
                               "and centre-cropped to the card's input_shape) or --eval-data synthetic")
    return Inputs(target, scheme, recipe_cfg, recipe_fn, runtime, teacher, student, card, card_path, eval_set,
                  device, budget)


def recipe_yaml(recipe: str, recipe_cfg) -> str:
    """The resolved recipe as YAML (``recipe.yaml`` of a run, and what ``--dry-run`` prints)."""
    return yaml.safe_dump({"recipe": recipe, **plain(asdict(recipe_cfg))}, sort_keys=False)


def preflight(cfg: TrainExportConfig) -> str:
    """Every check :func:`~dfq_deploy.pipeline.train_export` makes before training (target, recipe and options,
    teacher, evaluation data, device, run directory), without training or writing anything: what ``--nproc`` runs
    once before it starts the processes, and ``--dry-run`` alone. Returns a short text: what would run, and the
    resolved recipe (YAML).

    Raises:
        the errors :func:`~dfq_deploy.pipeline.train_export` raises before training.
    """
    inp = resolve(cfg)
    check_run_dir_free(cfg.out, cfg.recipe, inp.scheme.tag)
    scheme = inp.scheme.tag + grid_text(inp.scheme.weight_grid)
    return (f"checked, nothing written: target={cfg.target} recipe={cfg.recipe} scheme={scheme} "
            f"teacher={inp.card_path} device={device_name(inp.device)} evaluation={inp.eval_set.name} "
            f"({len(inp.eval_set.labels)} images)\n{recipe_yaml(cfg.recipe, inp.recipe_cfg).rstrip()}")


def _target_runtime(target: Target) -> tuple[type, str, str | None]:
    """(runtime class that checks parity, its report name, why the target runtime itself is not used or None).

    TensorRT engines are built on the device that runs them (a Jetson, a server GPU). Where TensorRT is missing,
    the tensorrt-profile graph is still exported and rule-checked, and its parity is checked in the target's stand-in
    runtime, ONNX Runtime (which computes the same function); the report says the engine was not built and why.
    """
    from ..runtimes import find_runtime, get_runtime

    cls, reason = find_runtime(target.runtime)
    if cls is None and target.stand_in_runtime:
        return get_runtime(target.stand_in_runtime), f"{target.stand_in_runtime} ({target.profile} profile)", reason
    if cls is None:
        return get_runtime(target.runtime), target.name, None  # raises RuntimeUnavailableError with its fix
    return cls, target.name, None


def _runs_at_its_size(teacher: torch.nn.Module, card, card_path: Path) -> None:
    """The float teacher must run on one input of its card's shape (a 28x28 image shrinks below a DenseNet's or
    VGG's kernels): said before any work, with the size to use."""
    try:
        with torch.no_grad():
            teacher(torch.zeros(1, *card.input_shape))
    except (RuntimeError, ValueError) as e:
        raise ModelError(f"the teacher does not run on its card's input_shape {list(card.input_shape)}: "
                         f"{str(e).splitlines()[0][:200]}",
                         hint=f"set input_shape in {card_path} to the size the model was trained at (torchvision's "
                              "classifiers were trained at [3, 224, 224]; docs/models.md lists the smallest each "
                              "takes)") from e


def _without_batchnorm(teacher: torch.nn.Module, recipe: str, recipe_cfg):
    """A teacher without BatchNorm (VGG, SqueezeNet, AlexNet) stores no statistics of its training data, which is
    what every data-free recipe inverts, except ``ptq`` calibrating on noise: ``ptq`` switches to that source (said
    in the log and in recipe.yaml); the others are refused before any work."""
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in teacher.modules()):
        return recipe_cfg
    if recipe == "ptq":
        if recipe_cfg.source != "noise":
            log.warning("the teacher has no BatchNorm layer, so there are no statistics to invert images from: "
                        "ptq calibrates and reconstructs on noise images (source=noise)")
            return replace(recipe_cfg, source="noise")
        return recipe_cfg
    raise ModelError(f"recipe {recipe} synthesises images from the teacher's BatchNorm statistics, and this teacher "
                     "has no BatchNorm layer", hint="use --recipe ptq (it calibrates such a model on noise images)")


def has_compute_budget(recipe_cfg) -> bool:
    """The recipe scales its work to a compute budget (``budget_gmac``, :func:`dfq_deploy.recipes.ptq.fit_budget`)."""
    return hasattr(recipe_cfg, "budget_gmac")


def keeps_pixel_range(recipe_cfg) -> bool:
    """The recipe keeps the images it inverts inside the range a real normalised image can take, and so needs the
    card's normalisation (``pixel_mean`` / ``pixel_std``; see recipes/lis.py)."""
    from ..recipes.options import PixelRange

    return isinstance(recipe_cfg, PixelRange)


def _fit_budget(recipe_cfg, teacher: torch.nn.Module, card, given: set[str]) -> tuple[object, dict]:
    """(the recipe's settings scaled to its compute budget, what was scaled and why); a recipe without a budget is
    returned as it is. ``given``: the options the user set, which are never scaled."""
    if not has_compute_budget(recipe_cfg):
        return recipe_cfg, {}
    from ..models import forward_cost
    from ..recipes.ptq import RECON_VALUE_MACS, fit_budget

    cost = forward_cost(teacher, card.input_shape)
    recipe_cfg, scaled = fit_budget(recipe_cfg, cost, given)
    if scaled:
        log.warning("the teacher costs %.3g GMAC-equivalents per image: to fit budget_gmac=%g the recipe runs with %s "
                    "(set them, or --set budget_gmac=0, to run more)", cost.work(), recipe_cfg.budget_gmac,
                    ", ".join(f"{k}={v}" for k, v in scaled.items()))
    return recipe_cfg, {"gmac_per_image": round(cost.gmac, 4), "work_per_image": round(cost.work(), 4),
                        "reconstruction_work_per_image": round(cost.work(RECON_VALUE_MACS), 4),
                        "budget_gmac": recipe_cfg.budget_gmac, "scaled": scaled}


def _with_card_pixel_range(recipe_cfg, card):
    """The card's mean and std as the recipe's pixel range, where the recipe keeps one and none was set."""
    if keeps_pixel_range(recipe_cfg) and not recipe_cfg.pixel_mean:
        return replace(recipe_cfg, pixel_mean=tuple(card.mean), pixel_std=tuple(card.std))
    return recipe_cfg
