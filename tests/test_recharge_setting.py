"""KEEPA_RECHARGE: the governor's burst mode, read once into the settings and handed to its policy."""

from __future__ import annotations

import pytest

from actors.app import governor_config
from keepa_deals.errors import ConfigError
from keepa_deals.settings import load_settings


def test_burst_mode_is_off_by_default_in_the_settings_and_the_governors_config():
    settings = load_settings({})
    assert settings.recharge == "off"
    assert governor_config(settings).recharge == "off"


@pytest.mark.parametrize("mode", ["auto", "on", " ON "])
def test_the_governor_gets_the_burst_mode_the_environment_names(mode):
    assert governor_config(load_settings({"KEEPA_RECHARGE": mode})).recharge == mode.strip().lower()


@pytest.mark.parametrize("value", ["yes", "", "burst"])
def test_a_bad_burst_mode_is_refused_naming_the_variable(value):
    with pytest.raises(ConfigError, match="KEEPA_RECHARGE must be off, auto or on"):
        load_settings({"KEEPA_RECHARGE": value})
