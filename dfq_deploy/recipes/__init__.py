"""Data-free training recipes: each a frozen dataclass config plus a function that trains a quantized student.

All share :func:`~dfq_deploy.recipes.loop.run_kd_loop`; a recipe supplies its student objective.
"""

from .dmkd import DMKDConfig, train_dmkd
from .gdfq import GDFQConfig, train_gdfq

# name -> (config class, train function)
RECIPES = {"gdfq": (GDFQConfig, train_gdfq), "dmkd": (DMKDConfig, train_dmkd)}

__all__ = ["RECIPES", "DMKDConfig", "GDFQConfig", "train_dmkd", "train_gdfq"]
