"""One list of Keepa domains (keepa_base/domains.py): the settings, the client and the embedded
server accept and refuse the same ids."""

from __future__ import annotations

import pytest

from keepa_api.client import ClientSettings
from keepa_api.service import KeepaService
from keepa_base.domains import DOMAINS
from keepa_base.errors import ConfigError
from keepa_deals.settings import load_settings

CANDIDATES = [str(i) for i in range(-1, 16)] + ["", " 3 ", "3.0", "com", "1e1", "０", "３", "³"]


def settings_domain(raw: str):
    try:
        return load_settings({"KEEPA_DOMAIN": raw}).keepa_domain
    except ConfigError as exc:
        assert "KEEPA_DOMAIN" in str(exc)
        return "refused"


def client_domain(raw: str):
    try:
        return ClientSettings.load(api_key="k" * 12, env={"KEEPA_DOMAIN": raw}).domain
    except ConfigError as exc:
        assert "KEEPA_DOMAIN" in str(exc)
        return "refused"


@pytest.mark.parametrize("raw", CANDIDATES)
def test_settings_and_client_accept_and_refuse_the_same_domain_ids(raw):
    assert settings_domain(raw) == client_domain(raw)


def test_the_accepted_ids_are_keepas_locales_without_the_retired_amazon_cn():
    accepted = {settings_domain(str(i)) for i in range(0, 16)} - {"refused"}
    assert accepted == set(DOMAINS) == {1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12}
    assert settings_domain("7") == client_domain("7") == "refused"


def test_a_refused_domain_is_named_with_the_valid_choices():
    with pytest.raises(ConfigError, match=r"KEEPA_DOMAIN must be a Keepa domain id, one of 1 \(amazon\.com\)"):
        load_settings({"KEEPA_DOMAIN": "7"})


@pytest.mark.parametrize("domain_id", [7, 13, *DOMAINS])
def test_the_embedded_server_takes_the_same_domains(domain_id):
    status, body, _ = KeepaService(refill_per_minute=60).handle(
        "/product", {"key": "good", "domain": str(domain_id), "asin": "B000000001"})
    assert (status == 200) == (domain_id in DOMAINS), body[:200]
