"""What each request class really costs, learned from Keepa's ``tokensConsumed``.

Keepa's prices are only known after the call (offers found, stock, fresh data). The governor
reserves by the largest per-unit cost seen in the last ``window`` calls of a class, so a run of
expensive calls cannot push the real balance far below what the model expected, and reports the
mean for projections.
"""

from __future__ import annotations

from collections import deque
from math import ceil


class CostBook:
    __slots__ = ("_seen", "_initial", "_max_cache", "_ceiling")

    def __init__(self, initial_unit_cost: dict, window: int, max_unit_cost: dict | None = None):
        self._initial = dict(initial_unit_cost)
        self._seen = {cls: deque(maxlen=window) for cls in initial_unit_cost}
        self._max_cache = dict(initial_unit_cost)
        self._ceiling = dict(max_unit_cost or initial_unit_cost)

    def learn(self, cls: str, units: int, consumed: int) -> None:
        seen = self._seen[cls]
        per_unit = consumed / units
        seen.append(per_unit)
        self._max_cache[cls] = max(seen)
        if per_unit > self._ceiling[cls]:
            self._ceiling[cls] = per_unit

    def uncertainty(self, cls: str, units: int, estimate: int) -> int:
        """How much more than ``estimate`` this call could cost: the documented (or largest ever
        seen) price per unit, less what was reserved."""
        return max(0, ceil(self._ceiling[cls] * units) - estimate)

    def reserve(self, cls: str, units: int) -> int:
        """Tokens to reserve for a call of ``units`` units: the recent worst case."""
        return ceil(self._max_cache[cls] * units)

    def mean(self, cls: str, units: int = 1) -> float:
        seen = self._seen[cls]
        per_unit = sum(seen) / len(seen) if seen else self._initial[cls]
        return per_unit * units
