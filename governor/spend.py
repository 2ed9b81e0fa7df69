"""Tokens spent, minute by minute, over the last hour: what efficiency figures are measured against.

The governor actor adds every settled call's ``tokensConsumed`` (Keepa's own number) to the minute
it settled in, on this system's clock, and keeps the last :data:`WINDOW_MINUTES` minutes in its
durable state and in its snapshot (``tokens_spent_by_minute``: ``[[minute_start_ms, tokens], ...]``),
so the exporter and ``keepa-deals status`` compute the hour's figures from shared state with their
own ``now``. Pure: no clock, no I/O.

"The last hour" is the current minute and the 59 before it (:func:`window_start_ms`); deals
ingested are counted from the same instant, so both sides of :func:`tokens_per_deal` cover the same
span.
"""

from __future__ import annotations

MINUTE_MS = 60_000
WINDOW_MINUTES = 60


def window_start_ms(now_ms: int) -> int:
    """Where the last hour begins: the start of the minute 59 minutes before ``now_ms``'s minute."""
    return (now_ms // MINUTE_MS - (WINDOW_MINUTES - 1)) * MINUTE_MS


def tokens_per_deal(tokens_spent: float, deals_ingested: int) -> float:
    """Tokens spent per deal ingested over the same hour. With no deal ingested it is the tokens
    spent (as if the next deal were about to land: a lower bound on what it costs), so an hour that
    buys nothing reads as expensive, never as free; 0 when nothing was spent either (idle)."""
    return tokens_spent / max(deals_ingested, 1)


class SpendWindow:
    """Per-minute token totals of the last hour; minutes that fall out of the window are dropped."""

    def __init__(self, by_minute: dict[int, int] | None = None):
        self.by_minute: dict[int, int] = dict(by_minute or {})

    def add(self, now_ms: int, tokens: int) -> None:
        if tokens <= 0:
            return
        minute = now_ms // MINUTE_MS * MINUTE_MS
        self.by_minute[minute] = self.by_minute.get(minute, 0) + tokens
        oldest = window_start_ms(now_ms)
        for old in [m for m in self.by_minute if m < oldest]:
            del self.by_minute[old]

    def to_json(self) -> list[list[int]]:
        return [[minute, tokens] for minute, tokens in sorted(self.by_minute.items())]

    @classmethod
    def from_json(cls, data) -> SpendWindow:
        """From :meth:`to_json`'s pairs; anything unreadable counts as no spending."""
        window = cls()
        for pair in data if isinstance(data, list) else ():
            if (isinstance(pair, list) and len(pair) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)):
                window.by_minute[pair[0]] = window.by_minute.get(pair[0], 0) + pair[1]
        return window


def spent_since(data, since_ms: int) -> int:
    """Tokens spent from ``since_ms`` on, from a snapshot's ``tokens_spent_by_minute``."""
    return sum(tokens for minute, tokens in SpendWindow.from_json(data).by_minute.items() if minute >= since_ms)
