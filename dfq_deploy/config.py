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
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise ConfigError(f"{where}: keys must be names, not {odd[0]!r}", hint=f"valid keys: {', '.join(fields)}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}",
                          hint=f"valid keys: {', '.join(fields)}")
    for k, v in data.items():
        default = getattr(cls, k, None) if not isinstance(fields[k].default, dataclasses._MISSING_TYPE) else None
        if isinstance(default, tuple):
            if isinstance(v, str) or not isinstance(v, (list, tuple)):
                raise ConfigError(f"{where}: {k} must be a list, got {v!r}", hint=_defaults_hint(where))
            kinds = {type(x) for x in fields[k].default} or _tuple_element_kinds(fields[k])
            if str in kinds and not all(isinstance(x, str) for x in v):
                raise ConfigError(f"{where}: {k} must be a list of names, got {v!r}", hint=_defaults_hint(where))
            if float in kinds and not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                          and math.isfinite(x) for x in v):
                raise ConfigError(f"{where}: {k} must be a list of finite numbers, got {v!r}",
                                  hint=_defaults_hint(where))
            data[k] = tuple(v)
            continue
        if isinstance(default, str) and not isinstance(v, str):
            raise ConfigError(f"{where}: {k} must be text, got {v!r}", hint=_defaults_hint(where))
        if isinstance(default, bool) and not isinstance(v, bool):
            raise ConfigError(f"{where}: {k} must be true or false, got {v!r}", hint=_defaults_hint(where))
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(v, str):  # YAML 1.1 reads "2e-3" (no dot) as a string
                try:
                    v = float(v)
                except ValueError:
                    raise ConfigError(f"{where}: {k} must be a number, got {v!r}",
                                      hint=_defaults_hint(where)) from None
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where}: {k} must be a number, got {v!r}", hint=_defaults_hint(where))
            if not math.isfinite(v):
                raise ConfigError(f"{where}: {k} must be a finite number, got {v!r}", hint=_defaults_hint(where))
            if isinstance(default, int) and isinstance(v, float) and not v.is_integer():
                raise ConfigError(f"{where}: {k} must be an integer, got {v!r}", hint=_defaults_hint(where))
            data[k] = type(default)(v)
    try:
        return cls(**data)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}", hint=_defaults_hint(where)) from e
    except ConfigError as e:
        e.hint = e.hint or _defaults_hint(where)
        raise


def _defaults_hint(where: str) -> str:
    name = where.split()[-1] if where.startswith("recipe ") else None
    return ("correct the value in --set or the recipe YAML; `dfq-deploy train-export "
            f"{'--recipe ' + name + ' ' if name else ''}--dry-run` prints every field with its default")


def _tuple_element_kinds(f: dataclasses.Field) -> set[type]:
    """Element types of an empty-by-default tuple field, from its annotation (``tuple[float, ...]``)."""
    text = str(f.type)
    return {float} if "float" in text else {str} if "str" in text else set()


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (safe loader only)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"{path} is {size} bytes; a recipe YAML is a few lines",
                              hint=f"pass a recipe file under {MAX_YAML_BYTES // 1024} KiB")
        data = _safe_yaml(path.read_bytes().decode("utf-8"), str(path))
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", hint="pass an existing YAML file") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})",
                          hint="pass a recipe YAML file saved as UTF-8") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}",
                          hint="fix the YAML (plain keys and values: no tags, no Python objects)") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, not {type(data).__name__}",
                          hint="write `recipe: NAME` and one `field: value` per line")
    return data


MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 10_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a ceiling on the nodes it builds: aliases are expanded into shared references,
    so a "billion laughs" document (aliases of aliases) costs little memory to load but explodes as soon as anything
    walks it (printing, copying, JSON). A recipe has a few dozen values; far more is refused before it is walked."""

    def construct_document(self, node):
        count, stack = 0, [node]
        while stack:  # walk the node graph once per reference, as a consumer would, but stop at the ceiling
            n = stack.pop()
            count += 1
            if count > MAX_YAML_NODES:
                raise ConfigError(f"{self.name}: the YAML expands to more than {MAX_YAML_NODES} values (aliases of "
                                  "aliases?)", hint="write the recipe's values out; a recipe has a few dozen keys")
            if isinstance(n, yaml.SequenceNode):
                stack.extend(n.value)
            elif isinstance(n, yaml.MappingNode):
                for k, v in n.value:
                    stack.extend((k, v))
        return super().construct_document(node)


def _safe_yaml(text: str, name: str):
    loader = _BoundedLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_override(item: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> (key, value read as YAML: numbers, lists, booleans, strings)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r} is not KEY=VALUE", hint="e.g. --set student_lr=0.002")
    key, value = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {item!r} has no KEY before '='", hint="e.g. --set student_lr=0.002")
    try:
        return key.strip(), _safe_yaml(value, f"--set {key.strip()}")
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
            raise ConfigError(f"`recipe:` in {config_path} must be a name, not {type(file_recipe).__name__}",
                              hint="e.g. `recipe: dmkd`")
        if recipe and file_recipe and recipe != file_recipe:
            raise ConfigError(f"--recipe {recipe} contradicts `recipe: {file_recipe}` in {config_path}",
                              hint="drop one of them")
        recipe = recipe or file_recipe
    options.update({k: v for k, v in flags.items() if v is not None})
    options.update(parse_override(item) for item in overrides)
    return recipe, options


def check_output_file(path: str | Path, option: str, overwrite: bool = True) -> Path:
    """``path`` as a file a command may write, checked before any work: a UTF-8 name (it goes into reports and
    ONNX metadata), not a folder, no existing file unless ``overwrite``. ``option`` names the flag in messages.

    Raises:
        ConfigError: one of the above, with the fix.
    """
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{option} {text!r} is not valid UTF-8", hint="use a path whose name is UTF-8 text") from None
    if not text.strip() or "\0" in text:
        raise ConfigError(f"{option} {text!r} is not a usable path", hint=f"e.g. {option} model.onnx")
    path = Path(text)
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder", hint=f"name a file, e.g. {option} {path / 'model.onnx'}")
    if path.exists() and not overwrite:
        raise ConfigError(f"{option} {path} already exists", hint="pick another path, or delete it first")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{option} {path}: {parent} is a file, not a folder", hint="pick another path")
            break
    return path
