import dataclasses
import subprocess
import sys

import pytest

from dfq_deploy.recipes import DEFAULT_RECIPE, RECIPES
from dfq_deploy.recipes.registry import recipe_help


def test_every_entry_unpacks_as_config_and_train_function():
    for name, entry in RECIPES.items():
        cls, fn = entry
        assert entry[0] is cls and dataclasses.is_dataclass(cls) and callable(fn), name
        assert cls.__name__ == entry.config_name and fn.__name__ == entry.train_name
        cls()  # the defaults are valid
    assert DEFAULT_RECIPE in RECIPES


def test_help_and_option_applicability_come_from_the_registry():
    text = recipe_help()
    assert all(f"{n}" in text and RECIPES[n].summary in text for n in RECIPES)
    assert text.index(DEFAULT_RECIPE) < min(text.index(n) for n in RECIPES if n != DEFAULT_RECIPE)
    assert RECIPES["dmkd"].takes("steps") and not RECIPES["ptq"].takes("steps")
    assert not RECIPES["lis"].takes("warmup_steps") and RECIPES["lis"].takes("steps")
    assert "recon.iters" in RECIPES["ptq"].not_applicable_hint("--steps")
    assert RECIPES["gdfq"].not_applicable_hint("--steps") == "drop --steps"


@pytest.mark.slow
def test_the_registry_imports_no_torch():
    code = ("import sys\nfrom dfq_deploy.recipes.registry import recipe_help\nrecipe_help()\n"
            "print('torch' in sys.modules, 'dfq_deploy.recipes.ptq' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
