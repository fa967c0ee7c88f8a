import pytest

from dfq_deploy.errors import ConfigError
from dfq_deploy.export import PROFILES
from dfq_deploy.runtimes import RUNTIMES
from dfq_deploy.targets import TARGETS, get_target


def test_every_target_names_a_real_profile_and_runtime():
    for t in TARGETS.values():
        assert t.profile in PROFILES and t.runtime in RUNTIMES
        assert t.stand_in_runtime is None or t.stand_in_runtime in RUNTIMES


def test_cli_choices_come_from_the_registry():
    from dfq_deploy.cli.export_cmd import export_cmd
    from dfq_deploy.cli.inspect_cmd import inspect_model
    from dfq_deploy.cli.train_export import train_export

    def choices(cmd, opt):
        return list(next(p for p in cmd.params if p.name == opt).type.choices)

    assert choices(train_export, "target") == list(TARGETS)
    assert choices(inspect_model, "runtime") == [*TARGETS, "none"]
    assert set(choices(export_cmd, "profile")) == {t.profile for t in TARGETS.values()}


def test_unknown_target_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown target"):
        get_target("coreml")
