"""The Amazon locales Keepa serves, by the domain id its API takes (``domain=`` on /product,
``domainId`` in a deal selection).

Keepa's API documentation lists the valid ids of its ``domain`` parameter as 1 com, 2 co.uk, 3 de,
4 fr, 5 co.jp, 6 ca, 8 it, 9 es, 10 in, 11 com.mx, 12 com.br. Its Java client numbers the locales
the same way (``AmazonLocale``: RESERVED, US, GB, DE, FR, JP, CA, CN, IT, ES, IN, MX, BR, ...): id 7
is amazon.cn, which Keepa no longer serves, so it is refused here (see docs/keepa.md).
"""

from __future__ import annotations

from keepa_base.errors import ConfigError

DOMAINS: dict[int, str] = {
    1: "amazon.com",
    2: "amazon.co.uk",
    3: "amazon.de",
    4: "amazon.fr",
    5: "amazon.co.jp",
    6: "amazon.ca",
    8: "amazon.it",
    9: "amazon.es",
    10: "amazon.in",
    11: "amazon.com.mx",
    12: "amazon.com.br",
}
DEFAULT_DOMAIN = 1


def domain_choices() -> str:
    """The valid ids with their locales, for an error message: ``1 (amazon.com), 2 (...)``."""
    return ", ".join(f"{domain_id} ({site})" for domain_id, site in DOMAINS.items())


def parse_domain(raw, variable: str = "KEEPA_DOMAIN") -> int:
    """The domain id ``raw`` names (an int, or its text); ConfigError naming ``variable`` if Keepa
    serves no such locale."""
    text = str(raw).strip()
    domain_id = int(text) if text.isascii() and text.isdigit() else None
    if domain_id not in DOMAINS:
        raise ConfigError(f"{variable} must be a Keepa domain id, one of {domain_choices()}; got {text[:20]!r}")
    return domain_id
