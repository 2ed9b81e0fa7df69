"""The Keepa HTTP client: one ``requests.Session``, a timeout on every call, typed results.

Four calls, each one HTTP request: :meth:`KeepaClient.deals` (one page of the deal feed),
:meth:`KeepaClient.peek` (``/product`` with ``history=0&stats=N``, the cheap look),
:meth:`KeepaClient.commit` (``/product`` with offers and history, the expensive fetch) and
:meth:`KeepaClient.token`. Every result carries the token :class:`~keepa_api.tokens.Envelope` of its
response and every :class:`~keepa_base.errors.KeepaError` carries it in ``.envelope`` when the body
had one, so callers reconcile their token model from responses and never poll ``/token``.

Keepa authenticates with ``key=`` in the query string, so the key is redacted from everything this
module can emit: exception messages (``requests`` embeds the URL in its own), log lines (including
urllib3's debug line, via :class:`KeyRedactor`) and ``repr``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import requests

from keepa_api.records import (
    DealPage,
    ProductBatch,
    decode_deals,
    decode_envelope,
    decode_products_each,
    load_body,
)
from keepa_api.tokens import Envelope
from keepa_base.domains import DEFAULT_DOMAIN, parse_domain
from keepa_base.errors import (
    BadKey,
    ConfigError,
    KeepaError,
    MalformedResponse,
    NotEnoughTokens,
    RequestRejected,
    TransientError,
)

log = logging.getLogger(__name__)

DEFAULT_URL = "https://api.keepa.com"
MAX_ASINS_PER_CALL = 100
RETRY_MARGIN_MS = 100
REDACTED = "<redacted>"


class KeyRedactor(logging.Filter):
    """Replaces registered secrets in log records of the loggers it is attached to (urllib3's)."""

    def __init__(self) -> None:
        super().__init__("keepa-key-redactor")
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        with self._lock:
            self._secrets.add(secret)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret and secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = self.redact(record.getMessage())
            record.msg, record.args = message, None
        return True


REDACTOR = KeyRedactor()
for _name in ("urllib3.connectionpool", "urllib3.util.retry", "requests"):
    logging.getLogger(_name).addFilter(REDACTOR)


@dataclass(frozen=True)
class ClientSettings:
    """Validated configuration; ``api_key`` never shows in ``repr``."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_URL
    domain: int = 1
    timeout_s: float = 30.0

    @classmethod
    def load(cls, api_key=None, base_url=None, domain=None, timeout_s=30.0, env=None) -> ClientSettings:
        env = os.environ if env is None else env
        key = api_key if api_key is not None else env.get("KEEPA_API_KEY", "")
        if not key or not key.strip():
            raise ConfigError("KEEPA_API_KEY is not set: the Keepa client needs an access key")
        url = (base_url or env.get("KEEPA_API_URL") or DEFAULT_URL).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"KEEPA_API_URL must start with http:// or https://, got {url[:60]!r}")
        domain_id = parse_domain(domain if domain is not None else env.get("KEEPA_DOMAIN", str(DEFAULT_DOMAIN)))
        if not timeout_s or timeout_s <= 0:
            raise ConfigError(f"the Keepa client timeout must be positive, got {timeout_s!r}")
        return cls(api_key=key.strip(), base_url=url, domain=domain_id, timeout_s=float(timeout_s))


class KeepaClient:
    """Keepa's REST API over one pooled session. Thread-safe for concurrent calls.

    ``max_connections`` is how many calls may be open at once without a new connection per call:
    requests keeps 10 a host by default and warns on every connection it has to drop beyond that,
    and a worker makes one call per thread plus the feed pages it reads at once."""

    def __init__(self, api_key: str | None = None, *, base_url: str | None = None,
                 domain: int | None = None, timeout_s: float = 30.0,
                 session: requests.Session | None = None, env: Mapping[str, str] | None = None,
                 max_connections: int = 32):
        self.settings = ClientSettings.load(api_key, base_url, domain, timeout_s, env)
        REDACTOR.add(self.settings.api_key)
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=max_connections)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session

    def __repr__(self) -> str:
        s = self.settings
        return f"KeepaClient(base_url={s.base_url!r}, domain={s.domain}, key={REDACTED})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> KeepaClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the four calls -----------------------------------------------------------------------
    def deals(self, selection: Mapping, page: int = 0) -> DealPage:
        """One page (up to 150 deals) of the deal feed; Keepa takes the page inside ``selection``.

        ``selection`` may carry Keepa's range options (``isRangeEnabled`` with ``currentRange``,
        ``deltaPercentRange``, ``salesRankRange``, ...; see :mod:`keepa_api.deal_query`): the feed
        then holds only the deals inside them, and a malformed range raises
        :class:`~keepa_base.errors.RequestRejected` (HTTP 400) naming the field."""
        if page < 0:
            raise ValueError(f"page must be >= 0, got {page}")
        query = {"domainId": self.settings.domain, **selection, "page": page}
        body, envelope = self._call("deal", {"selection": json.dumps(query, separators=(",", ":"))})
        return DealPage(page=page, deals=decode_deals(body), envelope=envelope)

    def peek(self, asins: Iterable[str], *, stats_days: int = 90, rating: bool = False) -> ProductBatch:
        """The cheap look: ``history=0&stats=N`` (1 token per ASIN, +1 with rating)."""
        params = {"asin": _asin_list(asins), "history": 0, "stats": stats_days}
        if rating:
            params["rating"] = 1
        body, envelope = self._call("product", params)
        return _product_batch(body, envelope)

    def commit(self, asins: Iterable[str], *, offers: int = 20, stock: bool = False,
               stats_days: int = 90, history: bool = True) -> ProductBatch:
        """The expensive fetch: offers (and history); 6 tokens per 10 offers found, +2 with stock."""
        if not 20 <= offers <= 100:
            raise ValueError(f"offers must be between 20 and 100, got {offers}")
        params = {"asin": _asin_list(asins), "offers": offers, "history": int(history),
                  "stats": stats_days}
        if stock:
            params["stock"] = 1
        body, envelope = self._call("product", params)
        return _product_batch(body, envelope)

    def token(self) -> Envelope:
        """Keepa's free status call. For diagnostics only: read envelopes to make decisions."""
        _body, envelope = self._call("token", {})
        return envelope

    # -- the wire ------------------------------------------------------------------------------
    def _call(self, path: str, params: dict) -> tuple[dict, Envelope]:
        s = self.settings
        url = f"{s.base_url}/{path}"
        failure = None
        try:
            response = self._session.get(
                url, params={"key": s.api_key, "domain": s.domain, **params}, timeout=s.timeout_s
            )
            raw, status = response.content, response.status_code
        except requests.Timeout:
            failure = f"no answer from Keepa /{path} within {s.timeout_s:g} s"
        except requests.ConnectionError as exc:
            failure = f"connection to Keepa /{path} failed: {_cause(exc)}"
        except requests.RequestException as exc:
            failure = f"request to Keepa /{path} failed: {type(exc).__name__}"
        if failure is not None:      # raised outside the except block: no chained URL with the key
            log.warning("%s", failure)
            raise TransientError(failure)
        return self._interpret(path, status, raw)

    def _interpret(self, path: str, status: int, raw: bytes) -> tuple[dict, Envelope]:
        try:
            body = load_body(raw)
        except MalformedResponse as exc:
            if status >= 500:
                raise TransientError(f"Keepa /{path} answered HTTP {status}", status=status) from None
            if status != 200:
                raise _error_for(path, status, None, {}) from None
            raise MalformedResponse(f"Keepa /{path}: {exc}", status=status) from None
        try:
            envelope = decode_envelope(body)
        except MalformedResponse as exc:
            if status != 200:
                raise _error_for(path, status, None, body if isinstance(body, dict) else {}) from None
            raise MalformedResponse(f"Keepa /{path}: {exc}", status=status) from None
        log.debug("Keepa /%s: HTTP %s, %s tokens consumed, %s left, refill in %s ms", path, status,
                  envelope.tokens_consumed, envelope.tokens_left, envelope.refill_in_ms)
        if status != 200:
            raise _error_for(path, status, envelope, body)
        if body.get("error") is not None:
            raise MalformedResponse(f"Keepa /{path}: a 200 response carries an 'error' object",
                                    status=status, envelope=envelope)
        return body, envelope


def _product_batch(body, envelope: Envelope) -> ProductBatch:
    """Decode product by product: a malformed product is listed in ``failed``, not raised, since
    the call was paid for and the good products in it are worth keeping."""
    try:
        products, failed = decode_products_each(body)
    except MalformedResponse as exc:  # not a /product answer at all: the whole call failed
        raise MalformedResponse(f"Keepa /product: {exc}", status=200, envelope=envelope) from None
    for asin, reason in failed:
        log.warning("Keepa /product: malformed product %s: %s", asin or "(ASIN unreadable)", reason)
    return ProductBatch(products=products, envelope=envelope, failed=failed)


def _asin_list(asins: Iterable[str]) -> str:
    items = [asins] if isinstance(asins, str) else list(asins)
    if not 1 <= len(items) <= MAX_ASINS_PER_CALL:
        raise ValueError(f"a /product call takes 1 to {MAX_ASINS_PER_CALL} ASINs, got {len(items)}")
    return ",".join(items)


def _cause(exc: Exception) -> str:
    """The innermost reason of a requests error, without the URL it embeds."""
    inner = exc
    for _ in range(10):
        if inner.__cause__ is not None:
            inner = inner.__cause__
        elif inner.args and isinstance(inner.args[0], Exception):
            inner = inner.args[0]
        else:
            break
    return type(inner).__name__


def _error_for(path: str, status: int, envelope: Envelope | None, body: dict) -> KeepaError:
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    kind = str(error.get("type") or "")[:60]
    detail = "; ".join(str(error[k])[:200] for k in ("message", "details") if error.get(k))
    said = f": {kind} {detail}".rstrip() if (kind or detail) else ""
    said = REDACTOR.redact(said)
    if status == 429:
        wait_ms = (envelope.refill_in_ms if envelope else 60_000) + RETRY_MARGIN_MS
        return NotEnoughTokens(f"Keepa /{path}: not enough tokens (HTTP 429), retry in {wait_ms} ms",
                               retry_after_ms=wait_ms, envelope=envelope)
    if status == 402:
        return BadKey(f"Keepa /{path}: key rejected (HTTP 402){said}", status=status, envelope=envelope)
    if status in (400, 404, 405):
        return RequestRejected(f"Keepa /{path}: request rejected (HTTP {status}){said}",
                               error_type=kind, status=status, envelope=envelope)
    if status >= 500:
        return TransientError(f"Keepa /{path}: HTTP {status}{said}", status=status, envelope=envelope)
    return MalformedResponse(f"Keepa /{path}: unexpected HTTP {status}{said}", status=status,
                             envelope=envelope)
