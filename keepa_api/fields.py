"""Checks that turn one JSON field into a typed value or a MalformedResponse naming the field.

Shared by the record decoders (:mod:`keepa_api.records`, :mod:`keepa_api.deal`). Every function takes
the path of the value (``deals.dr[3].avg``) so its error names what was wrong; none lets anything but
:class:`MalformedResponse` escape, whatever the value.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache

from keepa_base.errors import MalformedResponse

KEEPA_MINUTE_OFFSET = 21_564_000          # minutes from the Unix epoch to 2011-01-01 UTC
MAX_KEEPA_MINUTE = 100 * 366 * 24 * 60    # a century after 2011: anything later is garbage
NO_DATA = -1
ASIN_PATTERN = re.compile(r"[0-9A-Z]{10}")


# -- scalars ----------------------------------------------------------------------------------------
def show(value) -> str:
    """A short, safe description of a bad value for an error message."""
    if isinstance(value, (dict, list)):
        return f"{type(value).__name__} of {len(value)}"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "an integer beyond 64 bits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def malformed(path: str, what: str, value) -> MalformedResponse:
    return MalformedResponse(f"{path} must be {what}, got {show(value)}")


def join(path: str, field: str) -> str:
    return f"{path}.{field}" if field else path


def integer(value, path: str, low: int = -(2**62), high: int = 2**62) -> int:
    if type(value) is not int or not low <= value <= high:
        raise malformed(path, f"an integer in [{low}, {high}]", value)
    return value


def optional_integer(obj: dict, key: str, path: str, default: int = NO_DATA) -> int:
    value = obj.get(key)
    return default if value is None else integer(value, f"{path}.{key}")


def boolean(obj: dict, key: str, path: str) -> bool:
    value = obj.get(key, False)
    if type(value) is not bool:
        raise malformed(f"{path}.{key}", "a boolean", value)
    return value


def optional_string(value, path: str) -> str | None:
    if value is not None and type(value) is not str:
        raise malformed(path, "a string or null", value)
    return value


@lru_cache(maxsize=65_536)      # feeds repeat minutes a lot; a hit costs a tenth of a conversion
def keepa_minute_to_datetime(minute: int) -> datetime:
    return datetime.fromtimestamp((minute + KEEPA_MINUTE_OFFSET) * 60, tz=UTC)


def keepa_minute(value, path: str, field: str = "") -> int:
    """A Keepa minute, checked but not converted (see :func:`keepa_minute_to_datetime`)."""
    if type(value) is not int or not 0 <= value <= MAX_KEEPA_MINUTE:
        raise malformed(join(path, field), f"a Keepa minute in [0, {MAX_KEEPA_MINUTE}]", value)
    return value


def keepa_time(value, path: str, field: str = "") -> datetime:
    return keepa_minute_to_datetime(keepa_minute(value, path, field))


def valid_asin(value, path: str) -> str:
    if type(value) is not str or not ASIN_PATTERN.fullmatch(value):
        raise malformed(path, "an ASIN (10 upper-case letters or digits)", value)
    return value


# -- arrays ---------------------------------------------------------------------------------------
# Fast paths: ``sum`` runs in C, raises TypeError on anything but numbers and stays an ``int`` only if
# every element is an int (a float anywhere makes it a float), so one C pass validates a whole row.
# Rows are checked to be lists first (``sum`` of a dict would add its keys). Anything the fast path
# refuses goes through the slow path, which accepts ``null`` elements as -1 and names the bad index.
_LIST_ONLY = {list}


def int_array(value, path: str, field: str = "") -> tuple[int, ...]:
    """A JSON integer array as a tuple; ``null`` array -> (), ``null`` element -> -1."""
    if type(value) is list:
        try:
            if type(sum(value)) is int:
                return tuple(value)
        except TypeError:
            pass
        where = join(path, field)
        for i, item in enumerate(value):
            if item is not None and not isinstance(item, int):
                raise malformed(f"{where}[{i}]", "an integer or null", item)
        return tuple([NO_DATA if item is None else item for item in value])
    if value is None:
        return ()
    raise malformed(join(path, field), "an integer array or null", value)


def int_grid(value, path: str, field: str = "") -> tuple[tuple[int, ...], ...]:
    """A 2-D JSON integer array (``[date range][price type]``) as nested tuples."""
    if type(value) is list:
        try:
            if (not value or set(map(type, value)) == _LIST_ONLY) and type(sum(map(sum, value))) is int:
                return tuple(map(tuple, value))
        except TypeError:
            pass
        where = join(path, field)
        return tuple([int_array(row, f"{where}[{i}]") for i, row in enumerate(value)])
    if value is None:
        return ()
    raise malformed(join(path, field), "a 2-D integer array or null", value)


def image_name(value, path: str) -> str:
    """Keepa sends an image file name as an array of character codes."""
    try:
        if type(value) is not list:
            raise TypeError
        name = bytes(value).decode("ascii")
    except (TypeError, ValueError):
        raise malformed(f"{path}.image", "an array of ASCII character codes", value) from None
    if not name.isprintable():
        raise malformed(f"{path}.image", "a printable file name", name)
    return name
