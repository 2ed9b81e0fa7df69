"""Typed, validated records decoded from Keepa's JSON (docs/keepa.md).

Every decoder here is pure and total: given any Python value it returns a frozen record or raises
:class:`MalformedResponse` naming the field that was wrong. Nothing else escapes, so a hostile
payload never becomes a crash deep inside the pipeline, nor a silently empty result. One exception to
"all at once": a :class:`~keepa_api.deal.Deal` checks the elements of its big price arrays on their
first read, raising the same MalformedResponse there (see :mod:`keepa_api.deal` for why).

Conventions: Keepa minutes become UTC datetimes (``unix_ms = (keepa_minute + 21564000) * 60000``);
prices stay integers in the smallest currency unit with ``-1`` for "no offer / no data"; a ``null``
inside an integer array also becomes ``-1``; 2-D arrays are indexed ``[date range][price type]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter

import orjson

from keepa_api.deal import Deal, decode_deal
from keepa_api.fields import (
    ASIN_PATTERN,
    MAX_KEEPA_MINUTE,
    NO_DATA,
    boolean,
    int_array,
    integer,
    keepa_minute,
    keepa_minute_to_datetime,
    keepa_time,
    malformed,
    optional_integer,
    optional_string,
    valid_asin,
)
from keepa_api.tokens import Envelope
from keepa_base.errors import MalformedResponse

__all__ = ["Deal", "DealPage", "Offer", "Product", "ProductBatch", "Stats", "decode_deal", "decode_deals",
           "decode_envelope", "decode_offer", "decode_product", "decode_products", "decode_products_each",
           "decode_stats",
           "keepa_minute_to_datetime", "load_body"]

_LIST_ONLY, _PAIR_ONLY, _INT_ONLY, _FIRST = {list}, {2}, {int}, itemgetter(0)
SHIPPING_TYPES = frozenset({7, *range(18, 30), 32})   # csv series stored as [minute, price, shipping]


@dataclass(frozen=True, slots=True)
class Stats:
    current: tuple[int, ...]
    avg30: tuple[int, ...]
    avg90: tuple[int, ...]
    avg180: tuple[int, ...]
    avg365: tuple[int, ...]
    # [Keepa minute, value] per price type, or None; lists, so left out of the record's hash
    min: tuple[list[int] | None, ...] = field(hash=False)
    max: tuple[list[int] | None, ...] = field(hash=False)
    sales_rank_drops_30: int
    sales_rank_drops_90: int
    sales_rank_drops_180: int
    sales_rank_drops_365: int


@dataclass(frozen=True, slots=True)
class Offer:
    offer_id: int
    seller_id: str
    condition: int
    is_fba: bool
    is_prime: bool
    is_amazon: bool
    last_seen: datetime
    price: int            # latest price from offerCSV, -1 if none
    shipping: int         # latest shipping from offerCSV, -1 if none
    stock: int | None     # latest from stockCSV (only with stock=1), else None


@dataclass(frozen=True, slots=True)
class Product:
    asin: str
    title: str | None
    root_category: int
    last_update: datetime | None
    series: tuple[tuple[tuple[datetime, int], ...] | None, ...]   # csv by price type; -1 = gap
    stats: Stats | None
    offers: tuple[Offer, ...] | None                             # None when not requested


@dataclass(frozen=True, slots=True)
class DealPage:
    page: int
    deals: tuple[Deal, ...]
    envelope: Envelope

    @property
    def is_last(self) -> bool:
        """Keepa's rule: a page of fewer than 150 deals is the last one."""
        return len(self.deals) < 150


@dataclass(frozen=True, slots=True)
class ProductBatch:
    """A /product answer: the products that decoded, and for each one that did not, its ASIN (None
    if even that was unreadable) and the decoder's reason. One bad product spoils only itself."""

    products: tuple[Product, ...]
    envelope: Envelope
    failed: tuple[tuple[str | None, str], ...] = ()


# -- product parts ----------------------------------------------------------------------------------
def _series(value, path: str, stride: int) -> tuple[tuple[datetime, int], ...] | None:
    """One csv series ``[minute, value, (shipping,) ...]`` as (time, value) points; -1 marks a gap."""
    if value is None:
        return None
    flat = int_array(value, path)
    if len(flat) % stride:
        raise malformed(path, f"a flat array of {stride}-tuples", value)
    points = []
    for i in range(0, len(flat), stride):
        price = flat[i + 1]
        if stride == 3 and price >= 0 and flat[i + 2] > 0:
            price += flat[i + 2]
        points.append((keepa_time(flat[i], f"{path}[{i}]"), price))
    return tuple(points)


def _dated_values(value, path: str) -> tuple[list[int] | None, ...]:
    """``stats.min``/``max``: per price type a ``[minute, value]`` pair (the parsed body's own list) or
    None; the minutes stay Keepa minutes (see :func:`keepa_minute_to_datetime`).

    Every peeked ASIN carries 2 x 36 of these and the pipeline reads none, so a well-formed array is
    checked in a few C passes (as in :func:`int_array`) and kept as it is; anything those refuse takes
    the item-by-item path, which names the bad item. Don't mutate the body after decoding it."""
    if value is None:
        return ()
    if type(value) is not list:
        raise malformed(path, "an array or null", value)
    pairs = [item for item in value if item is not None]
    try:
        if (set(map(type, pairs)) <= _LIST_ONLY and set(map(len, pairs)) <= _PAIR_ONLY
                and set(map(type, map(_FIRST, pairs))) <= _INT_ONLY and type(sum(map(sum, pairs))) is int
                and (not pairs or min(pairs)[0] >= 0 and max(pairs)[0] <= MAX_KEEPA_MINUTE)):
            return tuple(value)
    except TypeError:
        pass
    out = []
    for i, item in enumerate(value):
        if item is None:
            out.append(None)
            continue
        pair = int_array(item, f"{path}[{i}]")   # a null value becomes -1, as in every array
        if len(pair) != 2:
            raise malformed(f"{path}[{i}]", "a [minute, value] pair", item)
        out.append([keepa_minute(pair[0], f"{path}[{i}][0]"), pair[1]])
    return tuple(out)


# -- objects ----------------------------------------------------------------------------------------
def decode_stats(obj, path: str = "stats") -> Stats | None:
    if obj is None:
        return None
    if type(obj) is not dict:
        raise malformed(path, "an object or null", obj)
    return Stats(
        current=int_array(obj.get("current"), f"{path}.current"),
        avg30=int_array(obj.get("avg30"), f"{path}.avg30"),
        avg90=int_array(obj.get("avg90"), f"{path}.avg90"),
        avg180=int_array(obj.get("avg180"), f"{path}.avg180"),
        avg365=int_array(obj.get("avg365"), f"{path}.avg365"),
        min=_dated_values(obj.get("min"), f"{path}.min"),
        max=_dated_values(obj.get("max"), f"{path}.max"),
        sales_rank_drops_30=optional_integer(obj, "salesRankDrops30", path),
        sales_rank_drops_90=optional_integer(obj, "salesRankDrops90", path),
        sales_rank_drops_180=optional_integer(obj, "salesRankDrops180", path),
        sales_rank_drops_365=optional_integer(obj, "salesRankDrops365", path),
    )


def decode_offer(obj, path: str = "offer") -> Offer:
    if type(obj) is not dict:
        raise malformed(path, "an object", obj)
    seller = obj.get("sellerId")
    if type(seller) is not str or not seller:
        raise malformed(f"{path}.sellerId", "a non-empty string", seller)
    history = int_array(obj.get("offerCSV"), f"{path}.offerCSV")
    if len(history) % 3:
        raise malformed(f"{path}.offerCSV", "a flat array of [minute, price, shipping] triples", history)
    stock_csv = obj.get("stockCSV")
    stock = None
    if stock_csv is not None:
        stock_history = int_array(stock_csv, f"{path}.stockCSV")
        if len(stock_history) % 2:
            raise malformed(f"{path}.stockCSV", "a flat array of [minute, stock] pairs", stock_csv)
        stock = stock_history[-1] if stock_history else None
    return Offer(
        offer_id=integer(obj.get("offerId"), f"{path}.offerId"),
        seller_id=seller,
        condition=optional_integer(obj, "condition", path),
        is_fba=boolean(obj, "isFBA", path),
        is_prime=boolean(obj, "isPrime", path),
        is_amazon=boolean(obj, "isAmazon", path),
        last_seen=keepa_time(obj.get("lastSeen"), f"{path}.lastSeen"),
        price=history[-2] if history else NO_DATA,
        shipping=history[-1] if history else NO_DATA,
        stock=stock,
    )


def decode_product(obj, path: str = "product") -> Product:
    if type(obj) is not dict:
        raise malformed(path, "an object", obj)
    csv = obj.get("csv")
    if csv is not None and type(csv) is not list:
        raise malformed(f"{path}.csv", "an array of series or null", csv)
    offers = obj.get("offers")
    if offers is not None and type(offers) is not list:
        raise malformed(f"{path}.offers", "an array or null", offers)
    last_update = obj.get("lastUpdate")
    return Product(
        asin=valid_asin(obj.get("asin"), f"{path}.asin"),
        title=optional_string(obj.get("title"), f"{path}.title"),
        root_category=optional_integer(obj, "rootCategory", path),
        last_update=None if last_update is None else keepa_time(last_update, f"{path}.lastUpdate"),
        series=tuple(
            _series(s, f"{path}.csv[{i}]", 3 if i in SHIPPING_TYPES else 2) for i, s in enumerate(csv or ())
        ),
        stats=decode_stats(obj.get("stats"), f"{path}.stats"),
        offers=None if offers is None else tuple(
            decode_offer(o, f"{path}.offers[{i}]") for i, o in enumerate(offers)
        ),
    )


# -- whole responses --------------------------------------------------------------------------------
def load_body(raw: bytes | str):
    """Parse a response body; anything but strict JSON raises MalformedResponse.

    orjson, not the standard library: 3.3-3.9x faster on the pages and product answers this client
    reads (measured on the embedded server's bodies), and strict by itself: NaN, Infinity, numbers
    that overflow a double, invalid UTF-8 and nesting deeper than 1,024 are errors, not values."""
    try:
        return orjson.loads(raw)
    except (ValueError, TypeError) as exc:
        raise MalformedResponse(f"response body is not JSON ({str(exc)[:80]})") from None


def decode_envelope(body) -> Envelope:
    try:
        return Envelope.from_json(body)
    except (ValueError, OverflowError, TypeError) as exc:
        raise MalformedResponse(f"token envelope: {str(exc)[:120]}") from None


def _check_no_error(body: dict) -> None:
    if body.get("error") is not None:
        raise MalformedResponse("a 200 response carries an 'error' object")


def decode_deals(body) -> tuple[Deal, ...]:
    """``body["deals"]["dr"]`` of a /deal response as Deal records."""
    if type(body) is not dict:
        raise malformed("response body", "an object", body)
    _check_no_error(body)
    deals = body.get("deals")
    if type(deals) is not dict:
        raise malformed("deals", "an object", deals)
    rows = deals.get("dr")
    if type(rows) is not list:
        raise malformed("deals.dr", "an array", rows)
    return tuple([decode_deal(row, f"deals.dr[{i}]") for i, row in enumerate(rows)])


def _product_rows(body) -> list:
    if type(body) is not dict:
        raise malformed("response body", "an object", body)
    _check_no_error(body)
    rows = body.get("products")
    if type(rows) is not list:
        raise malformed("products", "an array", rows)
    return rows


def decode_products(body) -> tuple[Product, ...]:
    """``body["products"]`` of a /product response as Product records; any bad product raises."""
    return tuple(decode_product(row, f"products[{i}]") for i, row in enumerate(_product_rows(body)))


def decode_products_each(body) -> tuple[tuple[Product, ...], tuple[tuple[str | None, str], ...]]:
    """``body["products"]`` decoded product by product: the good ones, and ``(asin, reason)`` for each
    malformed one (``asin`` None when the product's own ASIN is unreadable). A body that is not a
    /product answer at all still raises MalformedResponse."""
    good, failed = [], []
    for i, row in enumerate(_product_rows(body)):
        try:
            good.append(decode_product(row, f"products[{i}]"))
        except MalformedResponse as exc:
            asin = row.get("asin") if type(row) is dict else None
            failed.append((asin if type(asin) is str and ASIN_PATTERN.fullmatch(asin) else None, str(exc)))
    return tuple(good), tuple(failed)
