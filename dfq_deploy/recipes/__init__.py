"""Data-free training recipes: each a frozen dataclass config plus a function that trains a quantized student."""

from .gdfq import GDFQConfig, train_gdfq

RECIPES = {"gdfq": (GDFQConfig, train_gdfq)}

__all__ = ["RECIPES", "GDFQConfig", "train_gdfq"]
