"""How far this host's clock is ahead of Keepa's, measured from the envelopes (pure: readings are arguments).

The governor decides on its own clock, but Keepa's refills happen on Keepa's: an envelope says "the
next refill is ``refillIn`` ms after my ``timestamp``". Read on a host clock 30 s ahead of Keepa's,
that refill looks due 30 s early, and a call granted on it finds an empty bucket: HTTP 429.

Each envelope gives one reading: the host time it was received less Keepa's ``timestamp`` in it. A
reading is the true offset plus however long the answer took to reach the host clock (network,
Keepa's processing, the worker storing the answer before it settles), never less, so the smallest of
the recent readings is the best estimate, and an error can only make it too large: the governor then
believes Keepa's clock is earlier than it is, and grants late, never early. Recent readings only
(:data:`WINDOW`), so a host clock that is stepped follows within that many envelopes. Workers and
the governor must share a clock (one host, or hosts kept in step by NTP): a worker whose clock is
behind the governor's would read too small an offset.
"""

from __future__ import annotations

from collections import deque

WINDOW = 32   # readings kept: the newest envelopes


class ClockOffset:
    """The host-minus-Keepa offset in ms over the last :data:`WINDOW` envelopes; 0 before any."""

    def __init__(self, readings=()):
        self.readings: deque[int] = deque((int(r) for r in readings), maxlen=WINDOW)

    def observe(self, received_ms: int, keepa_timestamp_ms: int) -> int:
        """Take one envelope's reading; return the estimate."""
        self.readings.append(int(received_ms) - int(keepa_timestamp_ms))
        return self.offset_ms

    @property
    def offset_ms(self) -> int:
        return min(self.readings) if self.readings else 0

    def to_json(self) -> list[int]:
        return list(self.readings)
