"""Data-free training recipes: each a frozen dataclass config plus a function that trains a quantized student.

Every train function has the signature ``fn(teacher, student, cfg, img_shape, num_classes, progress=True,
on_step=None, run_dir=None, warmup_cache=None) -> history``. The generator recipes share
:func:`~dfq_deploy.recipes.loop.run_kd_loop` and supply their losses; LIS trains on a synthetic set on disk
(:mod:`~dfq_deploy.recipes.fixed_set`); ``ptq`` only calibrates.
"""

from .adversarial import AdversarialConfig, train_adversarial
from .dfqf import DFQFConfig, train_dfqf
from .dmkd import DMKDConfig, train_dmkd
from .gdfq import GDFQConfig, train_gdfq
from .lis import LISConfig, train_lis
from .ptq import PTQConfig, train_ptq

# name -> (config class, train function)
RECIPES = {
    "dmkd": (DMKDConfig, train_dmkd),
    "dfqf": (DFQFConfig, train_dfqf),
    "adversarial": (AdversarialConfig, train_adversarial),
    "lis": (LISConfig, train_lis),
    "gdfq": (GDFQConfig, train_gdfq),
    "ptq": (PTQConfig, train_ptq),
}
# the default is the best measured on the shipped teacher at the default budget (docs/benchmarks.md, "Several seeds,
# block reconstruction"): ZeroQ + block reconstruction, W4A4 93.36 +- 0.05 and W3A3 90.86 +- 0.32 (3 seeds); DMKD
# reaches 93.44 +- 0.24 / 85.77 after reconstruction (91.52 / 84.46 without) in about ten times the time
DEFAULT_RECIPE = "ptq"

__all__ = ["RECIPES", "DEFAULT_RECIPE", "AdversarialConfig", "DFQFConfig", "DMKDConfig", "GDFQConfig", "LISConfig",
           "PTQConfig", "train_adversarial", "train_dfqf", "train_dmkd", "train_gdfq", "train_lis", "train_ptq"]
