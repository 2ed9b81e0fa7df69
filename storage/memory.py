"""The simulator's store: :class:`storage.protocol.PipelineStore` in memory.

The same calls as the durable :class:`storage.store.Store`, with the same names and signatures;
each is one unit of work, as each is one transaction per ASIN there. Two things are the
simulator's own: ``known_asins`` (ASINs stored before the run: a sighting refreshes their light
record but makes no candidate), and the state is kept in plain attributes a test may read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from pipeline.commit import DealRecord
from pipeline.watermark import Watermark


class MemoryStore:
    def __init__(self, known_asins=()):
        self.light: dict[str, int] = {}          # asin -> deal time (ms) of its light record
        self.known: set[str] = set(known_asins)  # stored before: a light update only
        self.candidates: deque[str] = deque()    # new ASINs waiting for a peek, oldest first
        self.claimed: dict[str, int] = {}        # asin -> when it was claimed for a peek (ms)
        self.rejected: dict[str, str] = {}       # asin -> verdict reason
        self.screened_out: dict[str, str] = {}   # asin -> why its own feed numbers fail the rule
        self.failures: dict[str, int] = {}       # asin -> malformed answers so far
        self.deals: dict[str, DealRecord] = {}   # the stored, visible deals
        self.watermark = Watermark()
        self._seen_order: dict[str, int] = {}    # asin -> its place in line (first sighting)

    # -- light records and candidates --------------------------------------------------------------

    def upsert_deal(self, asin: str, deal_time_ms: int, now_ms: int, screened_reason: str | None = None) -> bool:
        first = asin not in self.light
        self.light[asin] = max(deal_time_ms, self.light.get(asin, deal_time_ms))
        if first:
            self._seen_order[asin] = len(self._seen_order)
            if asin not in self.known:
                if screened_reason is None:
                    self.candidates.append(asin)
                else:
                    self.screened_out[asin] = screened_reason
        return first

    def upsert_deals(self, deals: Iterable[tuple], now_ms: int) -> int:
        count = 0
        for asin, deal_time_ms, *screened in deals:
            self.upsert_deal(asin, deal_time_ms, now_ms, screened[0] if screened else None)
            count += 1
        return count

    def take_candidates(self, n: int, now_ms: int, at_least: int = 1) -> list[str]:
        if n <= 0 or len(self.candidates) < min(at_least, n):
            return []
        taken = [self.candidates.popleft() for _ in range(min(n, len(self.candidates)))]
        self.claimed.update(dict.fromkeys(taken, now_ms))
        return taken

    def release_candidate(self, asin: str) -> bool:
        """The ASIN goes back to the head of the line (the simulator returns claims in reverse)."""
        if self.claimed.pop(asin, None) is None:
            return False
        self.candidates.appendleft(asin)
        return True

    def requeue_stale_claims(self, older_than_ms: int, now_ms: int, in_use: Iterable[str] = ()) -> int:
        if older_than_ms < 0 or older_than_ms > now_ms:
            raise ValueError(f"older_than_ms is an age in ms (0..now_ms), got {older_than_ms} at now_ms {now_ms}")
        keep = set(in_use)
        stale = [a for a, at in self.claimed.items() if at < now_ms - older_than_ms and a not in keep]
        for asin in stale:
            del self.claimed[asin]
        self.candidates = deque(sorted([*self.candidates, *stale], key=self._seen_order.__getitem__))
        return len(stale)

    def record_verdict(self, asin: str, viable: bool, reason: str, now_ms: int) -> None:
        if asin in self.deals:
            return
        if self.claimed.pop(asin, None) is None and asin in self.candidates:  # judged before it was claimed
            self.candidates.remove(asin)
        if not viable:
            self.rejected[asin] = reason

    def record_verdicts(self, verdicts: Iterable[tuple[str, bool, str]], now_ms: int) -> None:
        for asin, viable, reason in verdicts:
            self.record_verdict(asin, viable, reason, now_ms)

    # -- malformed products ------------------------------------------------------------------------

    def record_product_failure(self, asin: str, stage: str, reason: str, now_ms: int) -> int:
        self.failures[asin] = self.failures.get(asin, 0) + 1
        return self.failures[asin]

    def set_aside(self, asin: str, stage: str, reason: str, now_ms: int) -> None:
        self.record_verdict(asin, False, f"set aside after malformed answers: {reason}"[:500], now_ms)

    # -- committed deals ---------------------------------------------------------------------------

    def store_deal(self, record: DealRecord) -> bool:
        stored = self.deals.get(record.asin)
        if stored is None or stored.committed_ms <= record.committed_ms:
            self.deals[record.asin] = record
        self.claimed.pop(record.asin, None)
        return stored is None

    def deal_times(self, asins: Iterable[str]) -> dict[str, int]:
        return {asin: self.light[asin] for asin in asins if asin in self.light}

    # -- the watermark -----------------------------------------------------------------------------

    def load_watermark(self) -> Watermark:
        return self.watermark

    def advance_watermark(self, watermark: Watermark, now_ms: int, from_page: int | None = None) -> Watermark:
        stored = self.watermark
        if stored.mark_ms is None:
            fresh = True
        else:
            fresh = watermark.mark_ms is not None and stored.mark_ms <= watermark.mark_ms
        if from_page is not None:
            fresh = fresh and (stored.next_page or 0) == from_page
        if fresh:
            self.watermark = watermark
        return self.watermark

    # -- counts ------------------------------------------------------------------------------------

    def deals_stored(self) -> int:
        return len(self.light)

    def deals_ingested(self) -> int:
        return len(self.deals)

    def candidates_waiting(self) -> int:
        return len(self.candidates)

    def deals_screened_out(self) -> int:
        return len(self.screened_out)
