"""Data-free training recipes: each a frozen dataclass config plus a function that trains a quantized student.

Every train function has the signature ``fn(teacher, student, cfg, img_shape, num_classes, progress=True,
on_step=None, run_dir=None, warmup_cache=None, checkpoint=None) -> history``. The generator recipes share
:func:`~dfq_deploy.recipes.loop.run_kd_loop` and supply their losses; LIS trains on a synthetic set on disk
(:mod:`~dfq_deploy.recipes.fixed_set`); ``ptq`` only calibrates. :data:`RECIPES` (:mod:`.registry`) names them.

The configs and train functions below are imported on first use (they need torch and Brevitas; the registry
does not).
"""

import importlib

from .registry import DEFAULT_RECIPE, RECIPES, Recipe

_LAZY = {name: (r.module, attr) for r in RECIPES.values() for name, attr in
         ((r.config_name, r.config_name), (r.train_name, r.train_name))}


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["RECIPES", "DEFAULT_RECIPE", "Recipe", "AdversarialConfig", "DFQFConfig", "DMKDConfig", "GDFQConfig",
           "LISConfig", "PTQConfig", "train_adversarial", "train_dfqf", "train_dmkd", "train_gdfq", "train_lis",
           "train_ptq"]
