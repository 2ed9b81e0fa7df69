"""The governor's configuration from the settings: its burst mode (KEEPA_RECHARGE), and how long it
remembers finished ids."""

from __future__ import annotations

import pytest

from actors.app import governor_config
from keepa_base.errors import ConfigError
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


def test_finished_ids_outlive_the_governors_resend_of_a_stale_grant_even_on_a_short_keepa_minute():
    from actors.governor_host import STALE_GRANT_MS

    short = governor_config(load_settings({"KEEPA_MINUTE_SECONDS": "0.5"}))
    assert short.remember_ms >= 2 * STALE_GRANT_MS  # the resend, then the copy's own repeated asks
    assert governor_config(load_settings({})).remember_ms == 60 * 60_000  # an hour on Keepa's real minute
