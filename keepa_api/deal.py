"""One deal of a /deal page (``deals.dr[i]``, docs/keepa.md), checked in two steps.

A full page is 150 deals of about 470 integers each (``current`` plus the 2-D ``delta``,
``deltaPercent`` and ``avg``, ``[date range][price type]``): checking every integer up front costs
more than all the rest of decoding. So :func:`decode_deal` checks every scalar and the *shape* of every
array (arrays and rows are lists or ``null``) when it decodes, and each array's elements are checked on
the first read of its accessor, which then keeps the tuple. Either step raises only
:class:`MalformedResponse` naming the path (``deals.dr[3].avg[1][2] must be an integer or null``);
code that reads the arrays of a deal must be ready for that error there, as it is for the decode.

The record keeps references to the parsed body's lists until they are read: don't mutate the body.
"""

from __future__ import annotations

from datetime import datetime
from itertools import chain

from keepa_api.fields import (
    ASIN_PATTERN,
    MAX_KEEPA_MINUTE,
    NO_DATA,
    image_name,
    int_array,
    int_grid,
    integer,
    keepa_minute,
    keepa_minute_to_datetime,
    malformed,
    optional_string,
    valid_asin,
)
from keepa_base.errors import MalformedResponse

_GRID_ROW_TYPES = frozenset({list, type(None)})
_MISSING = object()


class Deal:
    """A deal record; read-only. Prices are in the smallest currency unit, -1 = no offer.

    A slot holding a list is an array whose elements are not checked yet; after the first read it
    holds the checked tuple (``image``: the checked name).
    """

    __slots__ = ("_asin", "_title", "_root_category", "_categories", "_last_update", "_creation_date",
                 "_image", "_current", "_delta", "_delta_percent", "_avg", "_path")

    def __init__(self, asin, title, root_category, categories, last_update, creation_date, image,
                 current, delta, delta_percent, avg, path):
        self._asin, self._title, self._root_category, self._categories = asin, title, root_category, categories
        self._last_update, self._creation_date, self._image = last_update, creation_date, image
        self._current, self._delta, self._delta_percent, self._avg = current, delta, delta_percent, avg
        self._path = path

    @property
    def asin(self) -> str:
        return self._asin

    @property
    def title(self) -> str | None:
        return self._title

    @property
    def root_category(self) -> int:
        return self._root_category

    @property
    def categories(self) -> tuple[int, ...]:
        return self._categories

    @property
    def last_update(self) -> datetime:
        return keepa_minute_to_datetime(self._last_update)

    @property
    def creation_date(self) -> datetime:
        return keepa_minute_to_datetime(self._creation_date)

    @property
    def image(self) -> str | None:
        if type(self._image) is list:
            self._image = image_name(self._image, self._path)
        return self._image

    @property
    def current(self) -> tuple[int, ...]:
        """By price type; -1 = no offer, as is a ``null`` element."""
        if type(self._current) is list:
            self._current = int_array(self._current, self._path, "current")
        return self._current

    @property
    def delta(self) -> tuple[tuple[int, ...], ...]:
        """``[date range][price type]``; a ``null`` row is ()."""
        if type(self._delta) is list:
            self._delta = int_grid(self._delta, self._path, "delta")
        return self._delta

    @property
    def delta_percent(self) -> tuple[tuple[int, ...], ...]:
        if type(self._delta_percent) is list:
            self._delta_percent = int_grid(self._delta_percent, self._path, "deltaPercent")
        return self._delta_percent

    @property
    def avg(self) -> tuple[tuple[int, ...], ...]:
        if type(self._avg) is list:
            self._avg = int_grid(self._avg, self._path, "avg")
        return self._avg

    def _values(self) -> tuple:
        return (self.asin, self.title, self.root_category, self.categories, self.current, self.delta,
                self.delta_percent, self.avg, self._last_update, self._creation_date, self.image)

    def __eq__(self, other) -> bool:
        return self._values() == other._values() if type(other) is Deal else NotImplemented

    def __hash__(self) -> int:
        return hash((self._asin, self._last_update, self._creation_date))

    def __repr__(self) -> str:
        return f"Deal(asin={self._asin!r}, title={self._title!r}, last_update={self.last_update:%Y-%m-%d %H:%M})"


def _grid_shape(value, path: str, field: str) -> list | tuple:
    """The cheap half of a 2-D array: a list of lists or ``null`` rows; ``null`` itself is ()."""
    if type(value) is list:
        if _GRID_ROW_TYPES.issuperset(map(type, value)):
            return value
        for i, row in enumerate(value):
            if type(row) not in _GRID_ROW_TYPES:
                raise malformed(f"{path}.{field}[{i}]", "an integer array or null", row)
    if value is None:
        return ()
    raise malformed(f"{path}.{field}", "a 2-D integer array or null", value)


def decode_deal(obj, path: str = "deal") -> Deal:
    """Check ``obj``'s scalars and array shapes now; array elements on first read (module docstring)."""
    if type(obj) is not dict:
        raise malformed(path, "an object", obj)
    get = obj.get
    asin, title, root, last, created = (
        get("asin"), get("title"), get("rootCat"), get("lastUpdate"), get("creationDate"))
    current, image = get("current", _MISSING), get("image")
    # Inline checks of the common case; the named checker runs (and raises) only on a bad value.
    if type(asin) is not str or not ASIN_PATTERN.fullmatch(asin):
        valid_asin(asin, f"{path}.asin")
    if title is not None and type(title) is not str:
        optional_string(title, f"{path}.title")
    if root is None:
        root = NO_DATA
    elif type(root) is not int:
        integer(root, f"{path}.rootCat")
    if type(last) is not int or not 0 <= last <= MAX_KEEPA_MINUTE:
        keepa_minute(last, path, "lastUpdate")
    if type(created) is not int or not 0 <= created <= MAX_KEEPA_MINUTE:
        keepa_minute(created, path, "creationDate")
    if type(current) is not list:
        if current is _MISSING:     # required: a missing array is malformed, not an empty one
            raise MalformedResponse(f"{path}.current is missing")
        current = int_array(current, path, "current")
    if image is not None and type(image) is not list:
        image_name(image, path)
    delta, percent, avg = get("delta"), get("deltaPercent"), get("avg")
    if not (type(delta) is list and type(percent) is list and type(avg) is list
            and _GRID_ROW_TYPES.issuperset(map(type, chain(delta, percent, avg)))):
        delta = _grid_shape(delta, path, "delta")
        percent = _grid_shape(percent, path, "deltaPercent")
        avg = _grid_shape(avg, path, "avg")
    categories = int_array(get("categories"), path, "categories")
    return Deal(asin, title, root, categories, last, created, image, current, delta, percent, avg, path)
