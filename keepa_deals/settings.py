"""Configuration, read once from the environment into a frozen, validated object.

Every variable is documented in the README with its default. A bad value fails at start with a
sentence naming the variable (:class:`keepa_base.errors.ConfigError`); the API key never appears in
any message or repr.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlparse

from keepa_base.domains import DEFAULT_DOMAIN, parse_domain
from keepa_base.errors import ConfigError

DEFAULTS = {
    "KEEPA_API_URL": "https://api.keepa.com",
    "KEEPA_DOMAIN": str(DEFAULT_DOMAIN),
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "DATABASE_URL": "sqlite:///var/keepa-deals.db",
    "METRICS_HOST": "127.0.0.1",
    "METRICS_PORT": "9300",
    "KEEPA_MINUTE_SECONDS": "60",
    "LOG_LEVEL": "INFO",
    "KEEPA_SCREEN_QUERY": "on",
    "KEEPA_SCREEN_DEALS": "on",
    "KEEPA_RECHARGE": "off",
}

RECHARGE_MODES = ("off", "auto", "on")


def _int(env: dict, name: str, low: int, high: int) -> int:
    raw = env.get(name, DEFAULTS[name]).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _switch(env: dict, name: str) -> bool:
    raw = env.get(name, DEFAULTS[name]).strip().lower()
    if raw not in ("on", "off"):
        raise ConfigError(f"{name} must be on or off, got {raw[:20]!r}")
    return raw == "on"


def _url(env: dict, name: str, schemes: tuple[str, ...]) -> str:
    raw = env.get(name, DEFAULTS[name]).strip()
    parsed = urlparse(raw)
    if parsed.scheme not in schemes:
        wanted = " or ".join(s + "://" for s in schemes)
        raise ConfigError(f"{name} must start with {wanted}, got {(parsed.scheme or raw[:20])!r}")
    if parsed.scheme not in ("sqlite", "unix") and not parsed.hostname:
        raise ConfigError(f"{name} must name a host ({parsed.scheme}://HOST...)")  # never echo: may hold a password
    return raw


@dataclass(frozen=True)
class Settings:
    keepa_api_key: str | None = field(repr=False)
    keepa_api_url: str
    keepa_domain: int
    redis_url: str
    database_url: str
    metrics_host: str
    metrics_port: int
    keepa_minute_seconds: float
    log_level: str
    screen_query: bool = True      # the deal query carries the viability rule's ranges
    screen_deals: bool = True      # each feed deal is screened on its own numbers before any peek
    recharge: str = "off"          # the governor's burst mode: off, auto (below 10 tokens a minute) or on

    @property
    def embedded_keepa(self) -> bool:
        """No key: the stack runs against the built-in Keepa simulator."""
        return self.keepa_api_key is None

    def __repr__(self) -> str:
        key = "<unset>" if self.keepa_api_key is None else "<redacted>"
        return (f"Settings(keepa_api_key={key}, keepa_api_url={self.keepa_api_url!r}, "
                f"keepa_domain={self.keepa_domain}, redis_url={self.redis_url!r}, "
                f"database_url={self.database_url!r}, metrics={self.metrics_host}:{self.metrics_port})")


def load_settings(env: dict | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    key = env.get("KEEPA_API_KEY", "").strip() or None
    if key is not None and (len(key) < 8 or not key.isascii() or any(c.isspace() for c in key)):
        raise ConfigError("KEEPA_API_KEY does not look like a Keepa key (letters and digits, no spaces)")
    minute_raw = env.get("KEEPA_MINUTE_SECONDS", DEFAULTS["KEEPA_MINUTE_SECONDS"]).strip()
    try:
        minute_s = float(minute_raw)
    except ValueError:
        raise ConfigError(f"KEEPA_MINUTE_SECONDS must be a number of seconds, got {minute_raw!r}") from None
    if not 0.01 <= minute_s <= 60:
        raise ConfigError(f"KEEPA_MINUTE_SECONDS must be between 0.01 and 60, got {minute_s}")
    recharge = env.get("KEEPA_RECHARGE", DEFAULTS["KEEPA_RECHARGE"]).strip().lower()
    if recharge not in RECHARGE_MODES:
        raise ConfigError(f"KEEPA_RECHARGE must be off, auto or on, got {recharge[:20]!r}")
    level = env.get("LOG_LEVEL", DEFAULTS["LOG_LEVEL"]).strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    return Settings(
        keepa_api_key=key,
        keepa_api_url=_url(env, "KEEPA_API_URL", ("http", "https")),
        keepa_domain=parse_domain(env.get("KEEPA_DOMAIN", DEFAULTS["KEEPA_DOMAIN"])),
        redis_url=_url(env, "REDIS_URL", ("redis", "rediss", "unix")),
        database_url=_url(env, "DATABASE_URL", ("sqlite", "postgresql", "postgres")),
        metrics_host=env.get("METRICS_HOST", DEFAULTS["METRICS_HOST"]).strip(),
        metrics_port=_int(env, "METRICS_PORT", 1, 65535),
        keepa_minute_seconds=minute_s,
        log_level=level,
        screen_query=_switch(env, "KEEPA_SCREEN_QUERY"),
        screen_deals=_switch(env, "KEEPA_SCREEN_DEALS"),
        recharge=recharge,
    )
