"""Recipe configs: declared with pydantic (one line per field: its type, bounds and default), read from YAML and
``--set``, rejecting unknown keys (a typo must not silently become a default). A pydantic error becomes one
:class:`~dfq_deploy.errors.ConfigError` line naming the key, the value and the rule, with a valid example."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from .errors import ConfigError

T = TypeVar("T")

# Typo guards for every whole-number field: a value past these is a slip of the keyboard (an extra zero or three),
# and would allocate without bound or train for weeks before anyone noticed. Sized far above any real run.
MAX_IMAGES_PER_BATCH = 65_536
MAX_COUNT = 10_000_000
_CEILINGS = (MAX_IMAGES_PER_BATCH, MAX_COUNT)


def not_a_flag(value):
    """YAML's ``true`` is a Python int; as a count or a rate it is a mistake, not 1."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


# The field types recipe configs are declared with; narrow one with ``Annotated[Count, Field(ge=1)]``.
Count = Annotated[int, BeforeValidator(not_a_flag), Field(ge=0, le=MAX_COUNT)]          # steps, images, sizes
BatchSize = Annotated[int, BeforeValidator(not_a_flag), Field(ge=2, le=MAX_IMAGES_PER_BATCH)]  # images per step
Seed = Annotated[int, BeforeValidator(not_a_flag), Field(ge=0, lt=2 ** 32)]
Number = Annotated[float, BeforeValidator(not_a_flag)]     # finite: configs refuse nan and inf
Rate = Annotated[Number, Field(gt=0)]                       # learning rates, temperatures
Weight = Annotated[Number, Field(ge=0)]                     # loss weights
Flag = StrictBool
Names = tuple[str, ...]
Numbers = tuple[Number, ...]


def _usable_path(value: str) -> str:
    if not value.strip() or "\0" in value:
        raise ValueError("is not a usable path")
    try:  # a name that is not valid UTF-8 cannot be written into ONNX metadata, JSON reports or logs
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8: use a path whose name is UTF-8 text") from None
    return value


UsablePath = Annotated[str, AfterValidator(_usable_path)]   # a file or folder name the run can write and report

_PYDANTIC_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


def config_class(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen pydantic dataclass config: fields validated on construction (also by
    ``dataclasses.replace``), unknown keys refused, and every failure a :class:`ConfigError`.

    A field whose default is itself a config (a *section*, e.g. ``recon``) is also set by flat (``recon_iters``)
    or dotted (``recon.iters``) keys, and a partial mapping for it keeps the recipe's defaults for the rest."""
    cls = _pydantic_dataclass(frozen=True, config=_PYDANTIC_CONFIG)(cls)
    validate = cls.__init__

    @functools.wraps(validate)
    def __init__(self, *args, **kwargs):
        try:
            validate(self, *args, **fold_sections(type(self), kwargs))
        except ValidationError as e:
            raise describe_error(e, type(self), type(self).__name__, fold_sections(type(self), kwargs)) from e

    cls.__init__ = __init__
    return cls


def sections(cls) -> dict[str, Any]:
    """``cls``'s section fields: name -> default section."""
    return {f.name: f.default for f in dataclasses.fields(cls) if dataclasses.is_dataclass(f.default)}


def section_key(cls, key: str) -> tuple[str, str] | None:
    """(section, field) when ``key`` spells a section's field flat (``recon_iters``) or dotted (``recon.iters``)."""
    for name, default in sections(cls).items():
        for sep in (".", "_"):
            inner = key[len(name) + 1:]
            if key.startswith(name + sep) and inner in {f.name for f in dataclasses.fields(default)}:
                return name, inner
    return None


def fold_sections(cls, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with flat and dotted section keys gathered into their section, on top of the section given as a
    mapping or an object, else the class's default section."""
    parts: dict[str, dict] = {}
    out = {}
    for key, value in data.items():
        hit = section_key(cls, key) if isinstance(key, str) else None
        if hit:
            parts.setdefault(hit[0], {})[hit[1]] = value
        else:
            out[key] = value
    for name, default in sections(cls).items():
        given = out.get(name, default)
        if name not in parts and not isinstance(given, dict):
            continue
        if dataclasses.is_dataclass(given):
            given = dataclasses.asdict(given)
        elif isinstance(given, dict):
            given = {**dataclasses.asdict(default), **given}
        else:
            continue  # not a mapping: reported by validation
        out[name] = {**given, **parts.get(name, {})}
    return out


def config_from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build ``cls`` (a :func:`config_class`) from a mapping (YAML, ``--set`` values, ``run.json``).

    Raises:
        ConfigError: an unknown key (with the close valid names) or a value that breaks a field's rule.
    """
    data = dict(data or {})
    names = valid_keys(cls)
    odd = [k for k in data if not isinstance(k, str)]
    odd += [k for name in sections(cls) if isinstance(data.get(name), dict)
            for k in data[name] if not isinstance(k, str)]
    if odd:
        raise ConfigError(f"{where}: keys must be names, not {odd[0]!r}", hint=f"valid keys: {', '.join(names)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in data if k not in fields and not section_key(cls, k))
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=3, cutoff=0.6)
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}",
                          hint=f"did you mean {' or '.join(close)}?" if close else f"valid keys: {', '.join(names)}")
    try:
        return cls(**data)
    except ConfigError as e:
        if isinstance(e.__cause__, ValidationError):
            raise describe_error(e.__cause__, cls, where, fold_sections(cls, data)) from e.__cause__
        e.hint = e.hint or _defaults_hint(where)
        raise


def valid_keys(cls) -> list[str]:
    """Every key ``cls`` takes: its fields and each section's fields, dotted."""
    keys = []
    for f in dataclasses.fields(cls):
        default = f.default
        if dataclasses.is_dataclass(default):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(default)]
        else:
            keys.append(f.name)
    return keys


def describe_error(e: ValidationError, cls, where: str, data: dict) -> ConfigError:
    """The first of pydantic's errors as one ConfigError line: the key, the value given and the rule it breaks,
    with a valid example (the recipe's default) as the fix."""
    err = e.errors()[0]
    path = [str(p) for p in err["loc"] if isinstance(p, str)]
    key = ".".join(path)
    in_list = any(isinstance(p, int) for p in err["loc"])
    value = _given(data, path, err["input"]) if in_list else err["input"]
    if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        owner = _default_of(cls, path[:-1]) if len(path) > 1 else cls
        close = difflib.get_close_matches(path[-1], [f.name for f in dataclasses.fields(owner)], n=3)
        hint = (f"did you mean {' or '.join('.'.join([*path[:-1], c]) for c in close)}?" if close
                else f"valid keys: {', '.join(valid_keys(cls))}")
        return ConfigError(f"{where}: unknown key {key}", hint=hint)
    if err["type"] == "literal_error":
        text = "text, " if not isinstance(value, str) else ""
        message = f"{key} must be {text}{err['ctx']['expected']}, not {value!r}"
    else:
        message = f"{key}={value!r} {_range(cls, path, err) or _rule(err, in_list)}"
    try:
        hint = _example_hint(cls, path, where)
    except (AttributeError, KeyError, TypeError, yaml.YAMLError):  # no default of its own, or none YAML can write
        hint = _defaults_hint(where)
    return ConfigError(f"{where}: {message}", hint=hint)


def _given(data: dict, path: list[str], fallback: Any) -> Any:
    """The value ``data`` holds at ``path`` (pydantic reports a bad list element, not the list)."""
    value: Any = data
    for name in path:
        if not isinstance(value, dict) or name not in value:
            return fallback
        value = value[name]
    return value


def _range(cls, path: list[str], err: dict) -> str | None:
    """"must be in [lo, hi)" for a field bounded on both sides (ceilings aside) that a value falls outside."""
    if err["type"] not in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") or \
            (err["ctx"] or {}).get("le") in _CEILINGS:
        return None
    owner = type(_default_of(cls, path[:-1])) if len(path) > 1 else cls
    bounds = {}
    for rule in owner.__pydantic_fields__[path[-1]].metadata:
        bounds.update({k: getattr(rule, k) for k in ("ge", "gt", "le", "lt") if getattr(rule, k, None) is not None})
    low, high = bounds.get("ge", bounds.get("gt")), bounds.get("le", bounds.get("lt"))
    if low is None or high is None or high in _CEILINGS:
        return None
    return f"must be in {'[' if 'ge' in bounds else '('}{low}, {high}{']' if 'le' in bounds else ')'}"


def _rule(err: dict, in_list: bool) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if in_list:
        return "must be a list of names" if kind == "string_type" else "must be a list of finite numbers"
    if kind == "greater_than":
        return "must be positive" if ctx["gt"] == 0 else f"must be > {ctx['gt']}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}"
    if kind == "less_than_equal" and ctx["le"] in _CEILINGS:
        return f"is past the ceiling of {ctx['le']:,}: a typo?"
    rules = {"less_than_equal": f"must be <= {ctx.get('le')}", "less_than": f"must be < {ctx.get('lt')}",
             "int_from_float": "must be an integer", "finite_number": "must be a finite number",
             "string_type": "must be text", "tuple_type": "must be a list", "bool_type": "must be true or false",
             "bool_parsing": "must be true or false", "dataclass_type": "must be a mapping of its fields"}
    if kind in rules:
        return rules[kind]
    if kind in ("int_type", "int_parsing", "float_type", "float_parsing") or "number" in err["msg"]:
        return "must be a number"
    text = err["msg"].removeprefix("Value error, ")
    return text[:1].lower() + text[1:]


def _default_of(cls, path: list[str]) -> Any:
    """The default at ``path`` (a field, or a section's field) of ``cls``."""
    field = {f.name: f for f in dataclasses.fields(cls)}[path[0]]
    value: Any = field.default_factory() if field.default is dataclasses.MISSING else field.default
    for name in path[1:]:
        value = getattr(value, name)
    return value


def _example_hint(cls, path: list[str], where: str) -> str:
    default = _default_of(cls, path)
    if dataclasses.is_dataclass(default):
        default = dataclasses.asdict(default)
    example = yaml.safe_dump(list(default) if isinstance(default, tuple) else default, default_flow_style=True,
                             width=1 << 16)
    example = example.strip().removesuffix("...").strip()
    section = _default_of(cls, path[:1]) if len(path) > 1 else None
    about = f" of {path[0]}, {type(section).__doc__.strip().splitlines()[0].rstrip('.').lower()}" if section else ""
    key = ".".join(path)
    # a config of command-line options (``cli_options = True``) names the option, a recipe config --set
    option = f"--{key.replace('_', '-')}" if getattr(cls, "cli_options", False) else None
    if default is None:
        fix = f"drop {option} for the default" if option else f"leave {key} unset for the default"
    else:
        fix = "e.g. " + (f"{option} {example}" if option else f"--set {key}={example}") + f" (the default{about})"
    return f"{fix}; " + _defaults_hint(where).split("; ", 1)[1]


def _defaults_hint(where: str) -> str:
    name = where.split()[-1] if where.startswith("recipe ") else None
    return ("correct the value in --set or the recipe YAML; `dfq-deploy train-export "
            f"{'--recipe ' + name + ' ' if name else ''}--dry-run` prints every field with its default")


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
