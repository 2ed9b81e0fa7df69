"""Typed, validated records decoded from Keepa's JSON (DESIGN.md section 2).

Every decoder here is pure and total: given any Python value it returns a frozen record or raises
:class:`MalformedResponse` naming the field that was wrong. Nothing else escapes, so a hostile
payload never becomes a crash deep inside the pipeline, nor a silently empty result.

Conventions: Keepa minutes become UTC datetimes (``unix_ms = (keepa_minute + 21564000) * 60000``);
prices stay integers in the smallest currency unit with ``-1`` for "no offer / no data"; a ``null``
inside an integer array also becomes ``-1``; 2-D arrays are indexed ``[date range][price type]``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from keepa_api.tokens import Envelope
from keepa_deals.errors import MalformedResponse

KEEPA_MINUTE_OFFSET = 21_564_000          # minutes from the Unix epoch to 2011-01-01 UTC
MAX_KEEPA_MINUTE = 100 * 366 * 24 * 60    # a century after 2011: anything later is garbage
NO_DATA = -1
SHIPPING_TYPES = frozenset({7, *range(18, 30), 32})   # csv series stored as [minute, price, shipping]
_ASIN = re.compile(r"[0-9A-Z]{10}")
_INT64 = "q"


@dataclass(frozen=True, slots=True)
class Deal:
    asin: str
    title: str | None
    root_category: int
    categories: tuple[int, ...]
    current: tuple[int, ...]                      # by price type, -1 = no offer
    delta: tuple[tuple[int, ...], ...]            # [date range][price type]
    delta_percent: tuple[tuple[int, ...], ...]
    avg: tuple[tuple[int, ...], ...]
    last_update: datetime
    creation_date: datetime
    image: str | None


@dataclass(frozen=True, slots=True)
class Stats:
    current: tuple[int, ...]
    avg30: tuple[int, ...]
    avg90: tuple[int, ...]
    avg180: tuple[int, ...]
    avg365: tuple[int, ...]
    min: tuple[tuple[datetime, int] | None, ...]
    max: tuple[tuple[datetime, int] | None, ...]
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
    products: tuple[Product, ...]
    envelope: Envelope


# -- scalars ----------------------------------------------------------------------------------------
def _show(value) -> str:
    """A short, safe description of a bad value for an error message."""
    if isinstance(value, (dict, list)):
        return f"{type(value).__name__} of {len(value)}"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "an integer beyond 64 bits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fail(path: str, what: str, value) -> MalformedResponse:
    return MalformedResponse(f"{path} must be {what}, got {_show(value)}")


def _int(value, path: str, low: int = -(2**62), high: int = 2**62) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _fail(path, f"an integer in [{low}, {high}]", value)
    return value


def _opt_int(obj: dict, key: str, path: str, default: int = NO_DATA) -> int:
    value = obj.get(key)
    return default if value is None else _int(value, f"{path}.{key}")


def _bool(obj: dict, key: str, path: str) -> bool:
    value = obj.get(key, False)
    if type(value) is not bool:
        raise _fail(f"{path}.{key}", "a boolean", value)
    return value


def _opt_str(value, path: str) -> str | None:
    if value is not None and type(value) is not str:
        raise _fail(path, "a string or null", value)
    return value


@lru_cache(maxsize=65_536)      # feeds repeat minutes a lot; a hit costs a tenth of a conversion
def keepa_minute_to_datetime(minute: int) -> datetime:
    return datetime.fromtimestamp((minute + KEEPA_MINUTE_OFFSET) * 60, tz=UTC)


def _time(value, path: str, field: str = "") -> datetime:
    if type(value) is not int or not 0 <= value <= MAX_KEEPA_MINUTE:
        raise _fail(_join(path, field), f"a Keepa minute in [0, {MAX_KEEPA_MINUTE}]", value)
    return keepa_minute_to_datetime(value)


def _asin(value, path: str) -> str:
    if type(value) is not str or not _ASIN.fullmatch(value):
        raise _fail(path, "an ASIN (10 upper-case letters or digits)", value)
    return value


# -- arrays ---------------------------------------------------------------------------------------
# Fast paths: ``sum`` runs in C, raises TypeError on anything but numbers and stays an ``int`` only if
# every element is an int (a float anywhere makes it a float), so one C pass validates a whole row.
# Rows are checked to be lists first (``sum`` of a dict would add its keys). Anything the fast path
# refuses goes through the slow path, which accepts ``null`` elements as -1 and names the bad index.
_LIST_ONLY = {list}
_EMPTY: list = []


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if field else path


def _ints(value, path: str, field: str = "") -> tuple[int, ...]:
    """A JSON integer array as a tuple; ``null`` array -> (), ``null`` element -> -1."""
    if type(value) is list:
        try:
            if type(sum(value)) is int:
                return tuple(value)
        except TypeError:
            pass
        where = _join(path, field)
        for i, item in enumerate(value):
            if item is not None and not isinstance(item, int):
                raise _fail(f"{where}[{i}]", "an integer or null", item)
        return tuple([NO_DATA if item is None else item for item in value])
    if value is None:
        return ()
    raise _fail(_join(path, field), "an integer array or null", value)


def _int_rows(value, path: str, field: str = "") -> tuple[tuple[int, ...], ...]:
    """A 2-D JSON integer array (``[date range][price type]``) as nested tuples."""
    if type(value) is list:
        try:
            if (not value or set(map(type, value)) == _LIST_ONLY) and type(sum(map(sum, value))) is int:
                return tuple(map(tuple, value))
        except TypeError:
            pass
        where = _join(path, field)
        return tuple([_ints(row, f"{where}[{i}]") for i, row in enumerate(value)])
    if value is None:
        return ()
    raise _fail(_join(path, field), "a 2-D integer array or null", value)


def _image(value, path: str) -> str | None:
    """Keepa sends an image file name as an array of character codes."""
    try:
        if type(value) is not list:
            raise TypeError
        name = bytes(value).decode("ascii")
    except (TypeError, ValueError):
        raise _fail(f"{path}.image", "an array of ASCII character codes", value) from None
    if not name.isprintable():
        raise _fail(f"{path}.image", "a printable file name", name)
    return name


def _series(value, path: str, stride: int) -> tuple[tuple[datetime, int], ...] | None:
    """One csv series ``[minute, value, (shipping,) ...]`` as (time, value) points; -1 marks a gap."""
    if value is None:
        return None
    flat = _ints(value, path)
    if len(flat) % stride:
        raise _fail(path, f"a flat array of {stride}-tuples", value)
    points = []
    for i in range(0, len(flat), stride):
        price = flat[i + 1]
        if stride == 3 and price >= 0 and flat[i + 2] > 0:
            price += flat[i + 2]
        points.append((_time(flat[i], f"{path}[{i}]"), price))
    return tuple(points)


def _dated_values(value, path: str) -> tuple[tuple[datetime, int] | None, ...]:
    """``stats.min``/``max``: per price type ``[minute, value]`` or null."""
    if value is None:
        return ()
    if type(value) is not list:
        raise _fail(path, "an array or null", value)
    out = []
    for i, item in enumerate(value):
        if item is None:
            out.append(None)
            continue
        pair = _ints(item, f"{path}[{i}]")
        if len(pair) != 2:
            raise _fail(f"{path}[{i}]", "a [minute, value] pair", item)
        out.append((_time(pair[0], f"{path}[{i}][0]"), pair[1]))
    return tuple(out)


# -- objects ----------------------------------------------------------------------------------------
def _fast_arrays(arrays: list, grids: list) -> bool:
    """One C-level check that every 1-D array and every row of every 2-D array holds only ints."""
    try:
        if set(map(type, arrays)) != _LIST_ONLY or set(map(type, grids)) != _LIST_ONLY:
            return False
        rows = [row for grid in grids for row in grid]
        rows += arrays
        return set(map(type, rows)) == _LIST_ONLY and type(sum(map(sum, rows))) is int
    except TypeError:
        return False


def decode_deal(obj, path: str = "deal") -> Deal:
    if type(obj) is not dict:
        raise _fail(path, "an object", obj)
    get = obj.get
    asin, title, root, last, created = (
        get("asin"), get("title"), get("rootCat"), get("lastUpdate"), get("creationDate"))
    current, categories = get("current", 0), get("categories", _EMPTY)
    delta, percent, avg = get("delta", _EMPTY), get("deltaPercent", _EMPTY), get("avg", _EMPTY)
    if type(asin) is not str or not _ASIN.fullmatch(asin):
        _asin(asin, f"{path}.asin")
    if title is not None and type(title) is not str:
        _opt_str(title, f"{path}.title")
    if _fast_arrays([current, categories], [delta, percent, avg]):
        current, categories = tuple(current), tuple(categories)
        delta, percent, avg = tuple(map(tuple, delta)), tuple(map(tuple, percent)), tuple(map(tuple, avg))
    else:
        current = _ints(current, path, "current")      # required: a missing one (0) fails here
        categories = _ints(categories, path, "categories")
        delta = _int_rows(delta, path, "delta")
        percent = _int_rows(percent, path, "deltaPercent")
        avg = _int_rows(avg, path, "avg")
    if root is None:
        root = NO_DATA
    elif type(root) is not int:
        _int(root, f"{path}.rootCat")
    image = get("image")
    return Deal(
        asin, title, root, categories, current, delta, percent, avg,
        _time(last, path, "lastUpdate"), _time(created, path, "creationDate"),
        None if image is None else _image(image, path),
    )


def decode_stats(obj, path: str = "stats") -> Stats | None:
    if obj is None:
        return None
    if type(obj) is not dict:
        raise _fail(path, "an object or null", obj)
    return Stats(
        current=_ints(obj.get("current"), f"{path}.current"),
        avg30=_ints(obj.get("avg30"), f"{path}.avg30"),
        avg90=_ints(obj.get("avg90"), f"{path}.avg90"),
        avg180=_ints(obj.get("avg180"), f"{path}.avg180"),
        avg365=_ints(obj.get("avg365"), f"{path}.avg365"),
        min=_dated_values(obj.get("min"), f"{path}.min"),
        max=_dated_values(obj.get("max"), f"{path}.max"),
        sales_rank_drops_30=_opt_int(obj, "salesRankDrops30", path),
        sales_rank_drops_90=_opt_int(obj, "salesRankDrops90", path),
        sales_rank_drops_180=_opt_int(obj, "salesRankDrops180", path),
        sales_rank_drops_365=_opt_int(obj, "salesRankDrops365", path),
    )


def decode_offer(obj, path: str = "offer") -> Offer:
    if type(obj) is not dict:
        raise _fail(path, "an object", obj)
    seller = obj.get("sellerId")
    if type(seller) is not str or not seller:
        raise _fail(f"{path}.sellerId", "a non-empty string", seller)
    history = _ints(obj.get("offerCSV"), f"{path}.offerCSV")
    if len(history) % 3:
        raise _fail(f"{path}.offerCSV", "a flat array of [minute, price, shipping] triples", history)
    stock_csv = obj.get("stockCSV")
    stock = None
    if stock_csv is not None:
        stock_history = _ints(stock_csv, f"{path}.stockCSV")
        if len(stock_history) % 2:
            raise _fail(f"{path}.stockCSV", "a flat array of [minute, stock] pairs", stock_csv)
        stock = stock_history[-1] if stock_history else None
    return Offer(
        offer_id=_int(obj.get("offerId"), f"{path}.offerId"),
        seller_id=seller,
        condition=_opt_int(obj, "condition", path),
        is_fba=_bool(obj, "isFBA", path),
        is_prime=_bool(obj, "isPrime", path),
        is_amazon=_bool(obj, "isAmazon", path),
        last_seen=_time(obj.get("lastSeen"), f"{path}.lastSeen"),
        price=history[-2] if history else NO_DATA,
        shipping=history[-1] if history else NO_DATA,
        stock=stock,
    )


def decode_product(obj, path: str = "product") -> Product:
    if type(obj) is not dict:
        raise _fail(path, "an object", obj)
    csv = obj.get("csv")
    if csv is not None and type(csv) is not list:
        raise _fail(f"{path}.csv", "an array of series or null", csv)
    offers = obj.get("offers")
    if offers is not None and type(offers) is not list:
        raise _fail(f"{path}.offers", "an array or null", offers)
    last_update = obj.get("lastUpdate")
    return Product(
        asin=_asin(obj.get("asin"), f"{path}.asin"),
        title=_opt_str(obj.get("title"), f"{path}.title"),
        root_category=_opt_int(obj, "rootCategory", path),
        last_update=None if last_update is None else _time(last_update, f"{path}.lastUpdate"),
        series=tuple(
            _series(s, f"{path}.csv[{i}]", 3 if i in SHIPPING_TYPES else 2) for i, s in enumerate(csv or ())
        ),
        stats=decode_stats(obj.get("stats"), f"{path}.stats"),
        offers=None if offers is None else tuple(
            decode_offer(o, f"{path}.offers[{i}]") for i, o in enumerate(offers)
        ),
    )


# -- whole responses --------------------------------------------------------------------------------
def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def load_body(raw: bytes | str):
    """Parse a response body; anything but strict JSON raises MalformedResponse."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError, TypeError) as exc:
        reason = type(exc).__name__ if isinstance(exc, RecursionError) else str(exc)[:80]
        raise MalformedResponse(f"response body is not JSON ({reason})") from None


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
        raise _fail("response body", "an object", body)
    _check_no_error(body)
    deals = body.get("deals")
    if type(deals) is not dict:
        raise _fail("deals", "an object", deals)
    rows = deals.get("dr")
    if type(rows) is not list:
        raise _fail("deals.dr", "an array", rows)
    return tuple([decode_deal(row, f"deals.dr[{i}]") for i, row in enumerate(rows)])


def decode_products(body) -> tuple[Product, ...]:
    """``body["products"]`` of a /product response as Product records."""
    if type(body) is not dict:
        raise _fail("response body", "an object", body)
    _check_no_error(body)
    rows = body.get("products")
    if type(rows) is not list:
        raise _fail("products", "an array", rows)
    return tuple(decode_product(row, f"products[{i}]") for i, row in enumerate(rows))
