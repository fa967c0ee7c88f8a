"""The recipe registry: each recipe's name, one-line summary and where its config and train function live.

Light on purpose (no torch, no Brevitas): the CLI builds ``--recipe``'s help and checks which options apply from it
on a deployment-only install too; a recipe's module is imported on first use of its config or train function.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One registry entry. Unpacks as ``(config class, train function)``."""

    name: str
    summary: str        # one line for --recipe's help
    module: str         # dfq_deploy.recipes.<module>, imported on first use
    config_name: str
    train_name: str
    # what to suggest instead of a train-export option the recipe has no field for (default: drop the option)
    instead: str = ""

    @property
    def config(self) -> type:
        return getattr(importlib.import_module(f"dfq_deploy.recipes.{self.module}"), self.config_name)

    @property
    def train(self) -> Callable:
        return getattr(importlib.import_module(f"dfq_deploy.recipes.{self.module}"), self.train_name)

    def __iter__(self):
        return iter((self.config, self.train))

    def __getitem__(self, i: int):
        return (self.config, self.train)[i]

    def takes(self, field: str) -> bool:
        """Whether the recipe's config has ``field``."""
        return field in {f.name for f in dataclasses.fields(self.config)}

    def not_applicable_hint(self, option: str) -> str:
        return self.instead or f"drop {option}"


_ENTRIES = [
    Recipe("ptq", "ZeroQ calibration + block reconstruction, no training", "ptq", "PTQConfig", "train_ptq",
           instead="ptq has no training steps: use --set recon.iters=N for longer reconstruction, or pick a "
                   "training recipe, e.g. --recipe dmkd"),
    Recipe("dmkd", "generator + KD from the float teacher and quantized copies, weighted by a tiny network", "dmkd",
           "DMKDConfig", "train_dmkd"),
    Recipe("dfqf", "generator with inception-score and adversarial losses, KD", "dfqf", "DFQFConfig", "train_dfqf"),
    Recipe("adversarial", "min-max generator(s) against quantized student(s)", "adversarial", "AdversarialConfig",
           "train_adversarial"),
    Recipe("lis", "images inverted from several teachers by courses, KD on the saved set", "lis", "LISConfig",
           "train_lis"),
    Recipe("gdfq", "generator (CE + BN statistics) and plain KD: the field's baseline", "gdfq", "GDFQConfig",
           "train_gdfq"),
]
RECIPES: dict[str, Recipe] = {r.name: r for r in _ENTRIES}
# the best measured on the shipped teacher at the default budget, in a fraction of the KD recipes' time
# (docs/benchmarks.md, "Several seeds, block reconstruction")
DEFAULT_RECIPE = "ptq"


def recipe_help() -> str:
    """``--recipe``'s help: every recipe with its summary, the default first."""
    names = [DEFAULT_RECIPE, *(n for n in RECIPES if n != DEFAULT_RECIPE)]
    return "Data-free recipe: " + "; ".join(
        f"{n}{' (default)' if n == DEFAULT_RECIPE else ''}: {RECIPES[n].summary}" for n in names) + "."
