"""Frozen dataclass configs <-> YAML, rejecting unknown keys (a typo must not silently become a default)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")


def config_from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build ``cls`` from a mapping; unknown keys and wrong types raise ConfigError naming the key."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}",
                          hint=f"valid keys: {', '.join(fields)}")
    for k, v in data.items():
        default = getattr(cls, k, None) if not isinstance(fields[k].default, dataclasses._MISSING_TYPE) else None
        if isinstance(default, tuple):
            if isinstance(v, str) or not isinstance(v, (list, tuple)):
                raise ConfigError(f"{where}: {k} must be a list, got {v!r}")
            data[k] = tuple(v)
            continue
        if isinstance(default, bool) and not isinstance(v, bool):
            raise ConfigError(f"{where}: {k} must be true or false, got {v!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(v, str):  # YAML 1.1 reads "2e-3" (no dot) as a string
                try:
                    v = float(v)
                except ValueError:
                    raise ConfigError(f"{where}: {k} must be a number, got {v!r}") from None
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where}: {k} must be a number, got {v!r}")
            if not math.isfinite(v):
                raise ConfigError(f"{where}: {k} must be a finite number, got {v!r}")
            if isinstance(default, int) and isinstance(v, float) and not v.is_integer():
                raise ConfigError(f"{where}: {k} must be an integer, got {v!r}")
            data[k] = type(default)(v)
    try:
        return cls(**data)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (safe loader only)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", hint="pass an existing YAML file") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> (key, value read as YAML: numbers, lists, booleans, strings)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r} is not KEY=VALUE", hint="e.g. --set student_lr=0.002")
    key, value = item.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: the value is not readable: {e}",
                          hint="quote strings, write lists as [a, b]") from e


def merge_recipe_options(config_path: str | Path | None, recipe: str | None, flags: dict[str, Any],
                         overrides: list[str] | tuple[str, ...] = ()) -> tuple[str | None, dict[str, Any]]:
    """The recipe name and its options from, in rising precedence: a recipe YAML (``recipe: NAME`` plus fields),
    ``flags`` (named options; None = not given) and ``KEY=VALUE`` overrides. Returns (recipe or None, options).

    Raises:
        ConfigError: unreadable YAML, a recipe name that contradicts the YAML's, a malformed override.
    """
    options: dict[str, Any] = {}
    if config_path:
        options = load_yaml(config_path)
        file_recipe = options.pop("recipe", None)
        if file_recipe is not None and not isinstance(file_recipe, str):
            raise ConfigError(f"`recipe:` in {config_path} must be a name, not {type(file_recipe).__name__}")
        if recipe and file_recipe and recipe != file_recipe:
            raise ConfigError(f"--recipe {recipe} contradicts `recipe: {file_recipe}` in {config_path}",
                              hint="drop one of them")
        recipe = recipe or file_recipe
    options.update({k: v for k, v in flags.items() if v is not None})
    options.update(parse_override(item) for item in overrides)
    return recipe, options
