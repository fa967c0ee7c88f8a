"""Property-based fuzzing (hypothesis) of what a user types: command-line options, `--set` values and recipe YAML.
Whatever the input, `train-export --dry-run` (every check a real run makes before training) must end with exit 0 or
a documented user-error code, one `error:` line and no traceback, within seconds, and write nothing; memory must stay
bounded (YAML alias bombs, huge sizes)."""

from __future__ import annotations

import resource
import time

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfq_deploy.cli import main
from dfq_deploy.recipes import RECIPES

from ..conftest import make_tiny_teacher, write_tiny_card

USER_ERRORS = {0, 2, 3, 4, 6}   # success, bad value, data, model, runtime unavailable (e.g. --device cuda here)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    return root, write_tiny_card(root, make_tiny_teacher())


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _dry_run(env, *args: str):
    root, card = env
    out = root / "run"
    t0, rss0 = time.time(), _peak_rss_mib()
    r = CliRunner().invoke(main, ["train-export", "--dry-run", "--teacher", str(card), "--eval-limit", "4",
                                  "--out", str(out), *args])
    assert r.exit_code in USER_ERRORS, f"exit {r.exit_code} for {args!r}\n{r.output}"
    assert "Traceback" not in r.output and "internal error" not in r.output, f"{args!r}\n{r.output}"
    if r.exit_code:
        assert "error" in r.output.lower(), r.output
    assert time.time() - t0 < 30, f"{args!r} took {time.time() - t0:.0f} s"
    assert _peak_rss_mib() - rss0 < 512, f"{args!r} grew the peak memory by {_peak_rss_mib() - rss0:.0f} MiB"
    assert not out.exists() and not list(root.glob(".run.partial*"))
    return r


# values as a user might type them: numbers of every size, YAML-ish fragments, and arbitrary text
_typed = st.one_of(
    st.integers(min_value=-2 ** 70, max_value=2 ** 70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from([".nan", ".inf", "-.inf", "1e400", "[0.1", "[]", "[1, [2]]", "{a: 1}", "~", "null", "true",
                     "W4A4", "[W8A8, 4]", "&a [*a]", "!!python/name:os.system", "0x10", "1_000", "", "'", '"']),
    st.text(max_size=40),
)


@SETTINGS
@given(recipe=st.sampled_from(sorted(RECIPES)), data=st.data())
def test_fuzz_set_values(env, recipe, data):
    fields = sorted(RECIPES[recipe][0].__dataclass_fields__)
    key = data.draw(st.one_of(st.sampled_from(fields), st.text(max_size=12)), label="key")
    value = data.draw(_typed, label="value")
    _dry_run(env, "--recipe", recipe, "--set", f"{key}={value}")


_option = st.sampled_from(["--seed", "--threads", "--eval-limit", "--batch-size", "--bits", "--first-last-bits",
                           "--checkpoint-every", "--min-agreement", "--max-accuracy-diff", "--layer-max-mismatch",
                           "--layer-samples", "--max-steps", "--device", "--target", "--nproc", "--recipe"])


@SETTINGS
@given(pairs=st.lists(st.tuples(_option, _typed), min_size=1, max_size=3))
def test_fuzz_command_line_options(env, pairs):
    _dry_run(env, *[a for pair in pairs for a in pair])  # --dry-run comes before --nproc starts any process


_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 40, max_value=2 ** 40),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                              inner, max_size=3),
                       max_leaves=12)


@SETTINGS
@given(recipe=st.one_of(st.sampled_from(sorted(RECIPES)), _scalars), data=st.data())
def test_fuzz_recipe_yaml_documents(env, recipe, data):
    fields = sorted(set().union(*(RECIPES[r][0].__dataclass_fields__ for r in RECIPES)))
    doc = data.draw(st.dictionaries(st.one_of(st.sampled_from(fields), st.text(max_size=8)), _values, max_size=4))
    doc["recipe"] = recipe
    path = env[0] / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    _dry_run(env, "--config", str(path))


@SETTINGS
@given(data=st.one_of(st.text(max_size=200).map(str.encode), st.binary(max_size=200)))
def test_fuzz_recipe_yaml_bytes(env, data):
    path = env[0] / "r.yaml"
    path.write_bytes(data)
    _dry_run(env, "--config", str(path))
