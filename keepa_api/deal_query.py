"""The range options of a ``/deal`` selection, checked and applied as Keepa does.

Keepa's "Browsing Deals" documentation and its Java client's ``DealRequest``: with
``"isRangeEnabled": true`` a selection may carry ``[min, max]`` integer ranges (Java ints):

- ``currentRange``: the current value of the chosen price type (``current[priceType]``);
- ``deltaRange`` / ``deltaPercentRange``: the difference between the average of the chosen
  ``dateRange`` and the current value, absolute / in percent (``delta[dateRange][priceType]``,
  ``deltaPercent[dateRange][priceType]``); the percent minimum is 10, 80 for the sales-rank type;
- ``deltaLastRange``: the last change (checked here; the embedded catalogue's deals carry no
  ``deltaLast``, so it filters nothing);
- ``salesRankRange``: the sales rank (``current[3]``); a max of -1 is an open upper bound, and once
  the range is used, products without a rank (-1) are left out.

A price drop is a positive delta (average minus current), as in the deal feeds Keepa serves
(akaszynski/keepa issue #158 shows one). Leaving a range out, or ``null``, does not use it. A
malformed range raises :class:`ValueError` with a message naming the field; the service answers it
with Keepa's 400 ``REQUEST_REJECTED``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_INT, MIN_INT = 2**31 - 1, -(2**31)
SALES_RANK = 3
MIN_DELTA_PERCENT, MIN_DELTA_PERCENT_SALES_RANK = 10, 80
RANGES = ("currentRange", "deltaRange", "deltaPercentRange", "deltaLastRange", "salesRankRange")

Range = tuple[int, int]


def delta_of(current: int, average: int) -> tuple[int, int]:
    """``(delta, deltaPercent)`` of one cell: average minus current (a drop is positive) and that in
    whole percent of the average; ``(0, 0)`` where either is missing (Keepa: "could not be calculated")."""
    if current < 0 or average < 0:
        return 0, 0
    delta = average - current
    return delta, (round(delta * 100 / average) if average > 0 else 0)


@dataclass(frozen=True)
class DealFilter:
    """The ranges of one selection (``None``: not used); hashable, so feeds can be cached per filter."""

    price_type: int
    date_range: int
    current: Range | None = None
    delta: Range | None = None
    delta_percent: Range | None = None
    sales_rank: Range | None = None

    def matches(self, current: Sequence[int], avg: Sequence[Sequence[int]]) -> bool:
        """Does a deal with these ``current`` and ``avg`` (``[date range][price type]``) pass?"""
        value = current[self.price_type] if len(current) > self.price_type else -1
        if self.current is not None and not self.current[0] <= value <= self.current[1]:
            return False
        if self.sales_rank is not None:
            rank = current[SALES_RANK] if len(current) > SALES_RANK else -1
            if rank < 0 or not self.sales_rank[0] <= rank <= self.sales_rank[1]:
                return False
        if self.delta is not None or self.delta_percent is not None:
            row = avg[self.date_range] if len(avg) > self.date_range else ()
            average = row[self.price_type] if len(row) > self.price_type else -1
            delta, percent = delta_of(value, average)
            if self.delta is not None and not self.delta[0] <= delta <= self.delta[1]:
                return False
            if self.delta_percent is not None and not self.delta_percent[0] <= percent <= self.delta_percent[1]:
                return False
        return True


def deal_filter(selection: dict, price_type: int) -> DealFilter | None:
    """The filter a selection asks for, ``None`` without ``isRangeEnabled``; ValueError names the field."""
    enabled = selection.get("isRangeEnabled", False)
    if not isinstance(enabled, bool):
        raise ValueError(f"selection.isRangeEnabled must be true or false, got {_show(enabled)}")
    if not enabled:
        return None
    ranges = {name: _range(selection, name) for name in RANGES}
    date_range = selection.get("dateRange", 0)
    percent = ranges["deltaPercentRange"]
    least = MIN_DELTA_PERCENT_SALES_RANK if price_type == SALES_RANK else MIN_DELTA_PERCENT
    if percent is not None and percent[0] < least:
        raise ValueError(f"selection.deltaPercentRange minimum must be at least {least} % for price type "
                         f"{price_type}, got {percent[0]}")
    return DealFilter(price_type=price_type, date_range=date_range, current=ranges["currentRange"],
                      delta=ranges["deltaRange"], delta_percent=percent, sales_rank=ranges["salesRankRange"])


def _range(selection: dict, name: str) -> Range | None:
    raw = selection.get(name)
    if raw is None:
        return None
    if not (isinstance(raw, list) and len(raw) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in raw)):
        raise ValueError(f"selection.{name} must be a list of two integers [min, max], got {_show(raw)}")
    low, high = raw
    if name == "salesRankRange" and high == -1:
        high = MAX_INT
    if not (MIN_INT <= low <= MAX_INT and MIN_INT <= high <= MAX_INT):
        raise ValueError(f"selection.{name} values must fit a 32-bit integer, got {_show(raw)}")
    if low > high:
        raise ValueError(f"selection.{name} minimum {low} is greater than its maximum {high}")
    return low, high


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
