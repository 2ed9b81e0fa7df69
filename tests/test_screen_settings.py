"""The screen's two switches: read once into the settings, on by default, a bad value names the variable."""

from __future__ import annotations

import pytest

from keepa_base.errors import ConfigError
from keepa_deals.settings import load_settings


def test_both_halves_of_the_screen_are_on_by_default():
    settings = load_settings({})
    assert (settings.screen_query, settings.screen_deals) == (True, True)


@pytest.mark.parametrize(("query", "deals"), [("off", "on"), ("on", "off"), ("OFF", " off ")])
def test_each_half_switches_off_on_its_own(query, deals):
    settings = load_settings({"KEEPA_SCREEN_QUERY": query, "KEEPA_SCREEN_DEALS": deals})
    assert (settings.screen_query, settings.screen_deals) == (query.strip().lower() == "on",
                                                              deals.strip().lower() == "on")


@pytest.mark.parametrize("variable", ["KEEPA_SCREEN_QUERY", "KEEPA_SCREEN_DEALS"])
@pytest.mark.parametrize("value", ["yes", "1", "", "true"])
def test_a_bad_switch_is_refused_naming_the_variable(variable, value):
    with pytest.raises(ConfigError, match=f"{variable} must be on or off"):
        load_settings({variable: value})
