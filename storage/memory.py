"""An in-memory store with the intent-named functions of the durable one (the simulator's storage).

Each function is one unit of work: in the durable store each is one transaction per ASIN, so a crash
between two calls loses nothing already written.
"""

from __future__ import annotations

from collections import deque

from pipeline.commit import DealRecord
from pipeline.watermark import Watermark


class MemoryStore:
    def __init__(self, known_asins=()):
        self.light: dict[str, int] = {}          # asin -> deal time (ms) of its light record
        self.known: set[str] = set(known_asins)  # stored before: a light update only
        self.candidates: deque[str] = deque()    # new ASINs waiting for a peek
        self.rejected: dict[str, str] = {}       # asin -> verdict reason
        self.screened_out: dict[str, str] = {}   # asin -> why its own feed numbers fail the rule
        self.deals: dict[str, DealRecord] = {}   # the stored, visible deals
        self.watermark = Watermark()

    def upsert_deal(self, asin: str, deal_time_ms: int) -> bool:
        """Store or refresh the light record; True if the ASIN was never seen before."""
        first = asin not in self.light
        self.light[asin] = max(deal_time_ms, self.light.get(asin, deal_time_ms))
        if first and asin not in self.known:
            self.candidates.append(asin)
        return first

    def screen_out(self, asin: str, deal_time_ms: int, reason: str) -> bool:
        """Store the light record of a deal whose own numbers fail the rule: never a candidate, so
        never peeked. True if the ASIN was never seen before."""
        first = asin not in self.light
        self.light[asin] = max(deal_time_ms, self.light.get(asin, deal_time_ms))
        if first and asin not in self.known:
            self.screened_out[asin] = reason
        return first

    def take_candidate(self) -> str | None:
        return self.candidates.popleft() if self.candidates else None

    def return_candidate(self, asin: str) -> None:
        self.candidates.appendleft(asin)

    def reject_candidate(self, asin: str, reason: str) -> None:
        self.rejected[asin] = reason

    def store_deal(self, record: DealRecord) -> bool:
        """Upsert the visible deal; True if it is new."""
        first = record.asin not in self.deals
        self.deals[record.asin] = record
        return first

    def advance_watermark(self, watermark: Watermark) -> None:
        self.watermark = watermark

    def deals_stored(self) -> int:
        return len(self.light)

    def deals_ingested(self) -> int:
        return len(self.deals)
