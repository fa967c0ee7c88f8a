import pytest

from dfq_deploy.config import merge_recipe_options, parse_override
from dfq_deploy.errors import ConfigError


def test_yaml_then_flags_then_overrides(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("recipe: dmkd\nsteps: 300\nseed: 1\nteacher_bits: [W8A8]\n")
    recipe, opts = merge_recipe_options(f, None, {"steps": 50, "seed": None}, ["steps=7", "student_lr=2e-3"])
    assert recipe == "dmkd"
    assert opts == {"steps": 7, "seed": 1, "teacher_bits": ["W8A8"], "student_lr": "2e-3"}  # YAML 1.1: a string
    assert merge_recipe_options(None, "ptq", {}, ["recon_iters=5"]) == ("ptq", {"recon_iters": 5})


@pytest.mark.parametrize("yaml_text,recipe,match", [
    ("recipe: dmkd\n", "gdfq", "contradicts"),
    ("recipe: [dmkd]\n", None, "must be a name"),
    ("- a\n- list\n", None, "mapping"),
])
def test_bad_recipe_files(tmp_path, yaml_text, recipe, match):
    f = tmp_path / "r.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError, match=match):
        merge_recipe_options(f, recipe, {})


@pytest.mark.parametrize("item,match", [("oops", "KEY=VALUE"), ("student_lr=[0.1", "not readable")])
def test_bad_overrides(item, match):
    with pytest.raises(ConfigError, match=match):
        parse_override(item)


def test_numbers_written_as_yaml_strings_are_read_and_non_finite_ones_refused():
    from dfq_deploy.config import config_from_dict
    from dfq_deploy.recipes import DMKDConfig

    assert config_from_dict(DMKDConfig, {"student_lr": "2e-3", "steps": "40"}).student_lr == 2e-3
    for bad, match in ((".nan", "finite"), ("inf", "finite"), ("fast", "must be a number")):
        with pytest.raises(ConfigError, match=match):
            config_from_dict(DMKDConfig, {"student_lr": parse_override(f"x={bad}")[1]})


def test_reconstruction_is_a_section_also_set_by_the_flat_keys_of_older_runs():
    from dfq_deploy.config import config_from_dict
    from dfq_deploy.recipes import PTQConfig

    nested = config_from_dict(PTQConfig, {"recon": {"iters": 7}})
    dotted = config_from_dict(PTQConfig, {"recon.iters": 7})
    flat = config_from_dict(PTQConfig, {"recon_iters": 7})
    assert nested == dotted == flat and flat.recon.iters == 7
    assert flat.recon.augment == PTQConfig().recon.augment == 1  # a partial section keeps the recipe's defaults
    assert flat.reconstruction().iters == 7 and flat.reconstruction().augment == 1
    assert PTQConfig(recon_iters=7) == flat  # the constructor reads them too


@pytest.mark.parametrize("data,match", [
    ({"recon_iters": -1}, r"recon\.iters=-1 must be >= 0\n  fix: e\.g\. --set recon\.iters=100 "),
    ({"momentum": 1.5}, r"momentum=1\.5 must be in \[0, 1\)"),
    ({"batch_size": 10 ** 9}, "batch_size=1000000000 is past the ceiling of 65,536"),
    ({"source": "banana"}, "source must be 'zeroq' or 'noise', not 'banana'"),
    ({"seed": True}, "seed=True must be a number"),
    ({"zeroq_step": 3}, "unknown key.*zeroq_step.*\n  fix: did you mean zeroq_steps"),
    ({"recon": {"iterz": 3}}, "unknown key recon.iterz\n  fix: did you mean recon.iters"),
])
def test_one_line_naming_key_value_and_rule_with_a_valid_example(data, match):
    from dfq_deploy.config import config_from_dict
    from dfq_deploy.recipes import DMKDConfig, PTQConfig

    cls = DMKDConfig if "momentum" in data else PTQConfig
    with pytest.raises(ConfigError, match=match):
        config_from_dict(cls, data, where="recipe x")
