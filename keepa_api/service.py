"""Keepa's side of each call, without sockets: key check, parameters, costs, tokens, faults.

:class:`KeepaService` answers ``handle(path, params)`` with ``(status, body bytes, delay_s)``; the
HTTP server (:mod:`keepa_api.server`) only moves bytes. Token rules come from the one pure model,
:class:`~keepa_api.tokens.TokenBucket`, behind one lock, so concurrent requests are charged exactly.

Time: ``clock()`` gives seconds (injected; ``time.monotonic`` by default). The bucket runs on Keepa
milliseconds, ``minute_seconds`` real seconds to a Keepa minute; ``refillIn`` and ``timestamp`` are
reported in real milliseconds, so a client that waits ``refillIn + 100`` wakes just after the refill.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import orjson

from keepa_api.catalogue import PRICE_TYPES, Catalogue
from keepa_api.deal_query import DealFilter, deal_filter
from keepa_api.tokens import CAP_MINUTES, REFILL_PERIOD_MS, Envelope, TokenBucket
from keepa_base.domains import DOMAINS

log = logging.getLogger(__name__)

DEAL_PAGE_COST, DEALS_PER_PAGE, MAX_DEAL_PAGE = 5, 150, 10_000 // 150
_ASIN = re.compile(r"[0-9A-Z]{10}")
_MALFORMED_PRODUCT = b'{"asin":"%s","title":"unreadable","stats":{"current":"not an array"}}'
_GARBAGE = (b"<html><body>502 Bad Gateway</body></html>", b'{"tokensLeft": 5, "deals": {"dr": [',
            b'{"deals": [1, 2, 3], "products": "none"}')


class BadRequest(ValueError):
    """A parameter Keepa would refuse with HTTP 400; the message is Keepa's error message."""


@dataclass
class Faults:
    """Switches for bad days. Rates are shares of calls; ``storm_429`` answers the next N calls 429;
    ``malformed_product_rate`` is a share of products (the same ones every time, as a product whose
    data Keepa cannot serve would be) sent malformed inside otherwise good /product answers."""

    error_rate: float = 0.0
    malformed_rate: float = 0.0
    malformed_product_rate: float = 0.0
    storm_429: int = 0
    slow_ms: int = 0
    rogue_tokens_per_minute: int = 0

    def update(self, changes: dict) -> None:
        known = {f.name: f.type for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise BadRequest(f"unknown fault {name!r}; known: {', '.join(known)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise BadRequest(f"fault {name!r} must be a non-negative number, got {value!r}")
            if name.endswith("_rate") and value > 1:
                raise BadRequest(f"fault {name!r} is a share between 0 and 1, got {value!r}")
        for name, value in changes.items():
            setattr(self, name, float(value) if name.endswith("_rate") else int(value))


class KeepaService:
    def __init__(self, *, refill_per_minute: int = 5, max_tokens: int | None = None,
                 start_tokens: int | None = None, minute_seconds: float = 60.0, seed: int = 1,
                 clock: Callable[[], float] = time.monotonic, epoch_ms: int | None = None,
                 bad_keys: tuple[str, ...] = ("", "bad"), catalogue: Catalogue | None = None,
                 faults: Faults | None = None):
        if minute_seconds <= 0:
            raise ValueError(f"minute_seconds must be positive, got {minute_seconds}")
        cap = max_tokens if max_tokens is not None else CAP_MINUTES * refill_per_minute
        self.bucket = TokenBucket(refill_per_minute, max_tokens=max_tokens,
                                  start_tokens=cap if start_tokens is None else start_tokens)
        self.minute_seconds = minute_seconds
        self.clock = clock
        self.t0 = clock()
        self.epoch_ms = int(time.time() * 1000) if epoch_ms is None else epoch_ms
        self.catalogue = catalogue or Catalogue(seed, start_minute=self.epoch_ms // 60_000 - 21_564_000)
        self.bad_keys = frozenset(bad_keys)
        self.faults = faults or Faults()
        self.seed = seed
        self.rng = random.Random(seed)
        self.product_calls: Counter[str] = Counter()   # charged /product calls naming each ASIN
        self.lock = threading.Lock()
        self.charged_to_callers_total = 0
        self.largest_call = 0
        self.min_balance = self.bucket.balance
        self.rogue_spent_total = 0
        self.requests_total: dict[str, int] = {}
        self._rogue_minutes_done = 0
        self._page_cache: dict[tuple[int, int], bytes] = {}
        self._product_json = lru_cache(maxsize=20_000)(self._make_product_json)

    def _make_product_json(self, asin: str, stats: int, history: int, offers: int, stock: int) -> bytes:
        product = self.catalogue.product(asin, stats_days=stats, history=bool(history), offers=offers,
                                         stock=bool(stock))
        return orjson.dumps(product)

    # -- time ------------------------------------------------------------------------------------
    def _elapsed_real_ms(self) -> float:
        return (self.clock() - self.t0) * 1000.0

    def _bucket_ms(self, real_ms: float) -> int:
        return int(real_ms * 60.0 / self.minute_seconds)

    def _envelope(self, real_ms: float, consumed: int) -> Envelope:
        """Under the lock: the bucket's envelope with times converted to real milliseconds."""
        env = self.bucket.envelope(self._bucket_ms(real_ms), consumed)
        refill_real = math.ceil(env.refill_in_ms * self.minute_seconds / 60.0)
        return Envelope(timestamp_ms=self.epoch_ms + int(real_ms), tokens_left=env.tokens_left,
                        refill_in_ms=min(refill_real, REFILL_PERIOD_MS), refill_rate=env.refill_rate,
                        tokens_consumed=consumed)

    def _rogue(self, bucket_ms: int) -> None:
        """Someone else spending on the same key once per Keepa minute (fault switch)."""
        minute = bucket_ms // REFILL_PERIOD_MS
        while self._rogue_minutes_done < minute:
            self._rogue_minutes_done += 1
            spend = self.faults.rogue_tokens_per_minute
            if spend and self.bucket.charge(spend, self._rogue_minutes_done * REFILL_PERIOD_MS):
                self.rogue_spent_total += spend

    # -- the call --------------------------------------------------------------------------------
    def handle(self, path: str, params: dict[str, str]) -> tuple[int, bytes, float]:
        path = "/" + path.strip("/")
        real_ms = self._elapsed_real_ms()
        with self.lock:
            self.requests_total[path] = self.requests_total.get(path, 0) + 1
        if path not in ("/deal", "/product", "/token"):
            return self._error(404, "NOT_FOUND", f"no such endpoint {path}", real_ms)
        if params.get("key", "") in self.bad_keys:
            return self._error(402, "PAYMENT_REQUIRED", "invalid or expired access key", real_ms, bad_key=True)
        try:
            cost, produce = self._plan(path, params)
        except BadRequest as exc:
            return self._error(400, "REQUEST_REJECTED", str(exc), real_ms)
        f = self.faults
        with self.lock:
            bucket_ms = self._bucket_ms(real_ms)
            self._rogue(bucket_ms)
            if f.storm_429 > 0 and path != "/token":
                f.storm_429 -= 1
                return 429, self._body({}, self._envelope(real_ms, 0)), f.slow_ms / 1000
            if f.error_rate and path != "/token" and self.rng.random() < f.error_rate:
                return self._error_locked(500, "INTERNAL_ERROR", "simulated server error", real_ms)
            garbage = f.malformed_rate and path != "/token" and self.rng.random() < f.malformed_rate
            garbage_kind = self.rng.randrange(4) if garbage else 0
            if cost and not self.bucket.charge(cost, bucket_ms):
                return 429, self._body({}, self._envelope(real_ms, 0)), f.slow_ms / 1000
            self.charged_to_callers_total += cost
            if path == "/product":
                self.product_calls.update(params.get("asin", "").split(","))
            if cost:
                self.largest_call = max(self.largest_call, cost)
                self.min_balance = min(self.min_balance, self.bucket.balance)
            envelope = self._envelope(real_ms, cost)
            feed_minutes = bucket_ms / REFILL_PERIOD_MS
        if garbage:
            body = (self._body({"error": {"type": "INTERNAL_ERROR", "message": "oops"}}, envelope)
                    if garbage_kind == 3 else _GARBAGE[garbage_kind])
            return 200, body, f.slow_ms / 1000
        return 200, produce(envelope, feed_minutes), f.slow_ms / 1000

    def _plan(self, path: str, params: dict[str, str]):
        """Validate parameters; return (cost, producer of the body). Raises BadRequest."""
        if path == "/token":
            return 0, lambda env, _m: self._body({}, env)
        domain = _int_param(params, "domain", 1)
        if domain not in DOMAINS:
            raise BadRequest(f"domain {domain} is not a valid Amazon locale")
        if path == "/deal":
            page, query = self._deal_selection(params)
            return DEAL_PAGE_COST, lambda env, minutes: self._deal_body(page, minutes, env, query)
        asins = params.get("asin", "")
        items = [a for a in asins.split(",") if a]
        if not 1 <= len(items) <= 100:
            raise BadRequest(f"asin must list 1 to 100 ASINs, got {len(items)}")
        bad = next((a for a in items if not _ASIN.fullmatch(a)), None)
        if bad is not None:
            raise BadRequest(f"invalid ASIN {bad[:20]!r}")
        stats = _int_param(params, "stats", 0)
        history = _flag(params, "history", 1)
        offers = _int_param(params, "offers", 0)
        if offers and not 20 <= offers <= 100:
            raise BadRequest(f"offers must be between 20 and 100, got {offers}")
        stock, rating = _flag(params, "stock", 0), _flag(params, "rating", 0)
        cost = 0
        for asin in items:
            found = min(self.catalogue.offers_found(asin), offers)
            cost += (max(1, 6 * math.ceil(found / 10)) + 2 * stock) if offers else 1
            cost += rating
        def products(env: Envelope, _minutes: float) -> bytes:
            rows = b",".join(_MALFORMED_PRODUCT % a.encode() if self.malformed_product(a)
                             else self._product_json(a, stats, history, offers, stock) for a in items)
            return b'{"products":[' + rows + b"]," + self._body({}, env)[1:]

        return cost, products

    def _deal_selection(self, params: dict[str, str]) -> tuple[int, DealFilter | None]:
        try:
            selection = json.loads(params.get("selection") or "null")
        except ValueError:
            raise BadRequest("selection is not valid JSON") from None
        if not isinstance(selection, dict):
            raise BadRequest("selection must be a JSON object")
        domain = selection.get("domainId", 1)
        if not isinstance(domain, int) or domain not in DOMAINS:
            raise BadRequest(f"selection.domainId {domain!r} is not a valid Amazon locale")
        types = selection.get("priceTypes")
        types = [types] if isinstance(types, int) and not isinstance(types, bool) else types
        if not (isinstance(types, list) and len(types) == 1 and isinstance(types[0], int)
                and 0 <= types[0] < PRICE_TYPES):
            raise BadRequest("selection.priceTypes must hold exactly one price type")
        page = selection.get("page", params.get("page", 0))
        try:
            page = int(page)
        except (TypeError, ValueError):
            raise BadRequest(f"page must be an integer, got {str(page)[:20]!r}") from None
        if not 0 <= page <= MAX_DEAL_PAGE:
            raise BadRequest(f"page must be between 0 and {MAX_DEAL_PAGE}, got {page}")
        date_range = selection.get("dateRange", 0)
        if isinstance(date_range, bool) or date_range not in (0, 1, 2, 3):
            raise BadRequest("selection.dateRange must be 0, 1, 2 or 3")
        try:
            query = deal_filter(selection, types[0])
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return page, query

    def malformed_product(self, asin: str) -> bool:
        """Whether the ``malformed_product_rate`` fault spoils this ASIN's product (fixed per ASIN)."""
        rate = self.faults.malformed_product_rate
        return bool(rate) and zlib.crc32(f"{self.seed}:{asin}".encode()) / 2**32 < rate

    # -- bodies ----------------------------------------------------------------------------------
    @staticmethod
    def _body(payload: dict, envelope: Envelope) -> bytes:
        return orjson.dumps({**payload, **envelope.to_json()})

    def _deal_body(self, page: int, minutes: float, envelope: Envelope, query: DealFilter | None = None) -> bytes:
        key = (self.catalogue.feed_size(minutes), page, query)
        deals = self._page_cache.get(key)
        if deals is None:
            rows = self.catalogue.feed_page(minutes, page, DEALS_PER_PAGE, query)
            roots = sorted({d["rootCat"] for d in rows})
            deals = orjson.dumps({"dr": rows, "categoryIds": roots, "categoryNames": [str(r) for r in roots],
                                  "categoryCount": [sum(d["rootCat"] == r for d in rows) for r in roots]})
            if len(self._page_cache) > 256:
                self._page_cache.clear()
            self._page_cache[key] = deals
        return b'{"deals":' + deals + b"," + self._body({}, envelope)[1:]

    def _error(self, status: int, kind: str, message: str, real_ms: float, bad_key: bool = False):
        if bad_key:       # no account behind the key: an envelope with nothing in it
            env = Envelope(timestamp_ms=self.epoch_ms + int(real_ms), tokens_left=0, refill_in_ms=0,
                           refill_rate=0)
            return status, _error_body(kind, message, env), 0.0
        with self.lock:
            return self._error_locked(status, kind, message, real_ms)

    def _error_locked(self, status: int, kind: str, message: str, real_ms: float):
        return status, _error_body(kind, message, self._envelope(real_ms, 0)), 0.0

    def books(self) -> dict:
        with self.lock:
            b = self.bucket
            return {"balance": b.balance, "start_tokens": b.start_tokens, "refilled_total": b.refilled_total,
                    "spent_total": b.spent_total, "refused_total": b.refused_total,
                    "lost_at_cap_total": b.lost_at_cap_total, "rogue_spent_total": self.rogue_spent_total,
                    "charged_to_callers_total": self.charged_to_callers_total,
                    "min_balance": self.min_balance, "largest_call": self.largest_call,
                    "product_calls_max_per_asin": max(self.product_calls.values(), default=0),
                    "requests_total": dict(self.requests_total), "faults": asdict(self.faults)}


def _error_body(kind: str, message: str, envelope: Envelope) -> bytes:
    return KeepaService._body({"error": {"type": kind, "message": message, "details": ""}}, envelope)


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw[:20]!r}") from None


def _flag(params: dict[str, str], name: str, default: int) -> int:
    value = _int_param(params, name, default)
    if value not in (0, 1):
        raise BadRequest(f"{name} must be 0 or 1, got {value}")
    return value
