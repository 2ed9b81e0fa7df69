"""What the pipeline's two shells call on their storage: :class:`PipelineStore`.

The actors call it on the durable :class:`storage.store.Store` (SQLite or PostgreSQL); the
simulator on :class:`storage.memory.MemoryStore`. Both define every method below with the same
name and signature (``tests/test_store_protocol.py`` compares them), so a decision of
:mod:`pipeline.driver` reaches the same kind of call in either shell.

A light record moves ``new -> peeking -> rejected | viable -> committed``; a feed deal the screen
set aside on its own numbers is stored ``screened`` and never becomes a candidate. Every write is
idempotent: a repeated call writes the same state, never a duplicate. Times are Unix ms on this
system's clock (``now_ms``) or Keepa's deal times (``deal_time_ms``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from pipeline.commit import DealRecord
from pipeline.watermark import Watermark


class PipelineStore(Protocol):
    # -- light records and candidates --------------------------------------------------------------

    def upsert_deal(self, asin: str, deal_time_ms: int, now_ms: int, screened_reason: str | None = None) -> bool:
        """Store or refresh the light record; True if the ASIN was never seen. A new ASIN becomes a
        candidate, or with ``screened_reason`` is stored screened out (never a candidate)."""
        ...

    def upsert_deals(self, deals: Iterable[tuple], now_ms: int) -> int:
        """:meth:`upsert_deal` for a feed page, ``(asin, deal_time_ms)`` or ``(asin, deal_time_ms,
        screened_reason)`` each; how many written."""
        ...

    def take_candidates(self, n: int, now_ms: int, at_least: int = 1) -> list[str]:
        """Claim up to ``n`` of the oldest candidates for a peek, never one twice; none when fewer
        than ``min(at_least, n)`` wait."""
        ...

    def release_candidate(self, asin: str) -> bool:
        """Give a claimed ASIN back to the candidates; False if it was not claimed."""
        ...

    def requeue_stale_claims(self, older_than_ms: int, now_ms: int, in_use: Iterable[str] = ()) -> int:
        """Give back the claims older than ``older_than_ms`` (an age), but none of ``in_use``; how many."""
        ...

    def record_verdict(self, asin: str, viable: bool, reason: str, now_ms: int) -> None:
        """Record the peek verdict and end the claim; a committed deal keeps its state."""
        ...

    def record_verdicts(self, verdicts: Iterable[tuple[str, bool, str]], now_ms: int) -> None:
        """:meth:`record_verdict` for each ``(asin, viable, reason)``."""
        ...

    # -- malformed products ------------------------------------------------------------------------

    def record_product_failure(self, asin: str, stage: str, reason: str, now_ms: int) -> int:
        """Count one malformed answer for ``asin`` at ``stage`` (peek or commit); how many so far."""
        ...

    def set_aside(self, asin: str, stage: str, reason: str, now_ms: int) -> None:
        """No more calls for ``asin``: it leaves the pipeline rejected, the reason saying why."""
        ...

    # -- committed deals ---------------------------------------------------------------------------

    def store_deal(self, record: DealRecord) -> bool:
        """Upsert the visible deal and mark the ASIN committed; True if the deal is new. An older
        record arriving late does not overwrite a newer one."""
        ...

    def deal_times(self, asins: Iterable[str]) -> dict[str, int]:
        """The feed time of each of ``asins`` that has a light record."""
        ...

    # -- the watermark -----------------------------------------------------------------------------

    def load_watermark(self) -> Watermark:
        ...

    def advance_watermark(self, watermark: Watermark, now_ms: int, from_page: int | None = None) -> Watermark:
        """Save the watermark and scan cursor unless its mark is older than the stored one (or, with
        ``from_page``, the stored cursor moved on from that page); what is stored now."""
        ...

    # -- counts ------------------------------------------------------------------------------------

    def deals_stored(self) -> int:
        """Light records stored (every ASIN the feed ever showed)."""
        ...

    def deals_ingested(self) -> int:
        """Committed, visible deals."""
        ...

    def candidates_waiting(self) -> int:
        """Candidates not yet claimed for a peek."""
        ...

    def deals_screened_out(self) -> int:
        """Feed deals stored screened out on their own numbers."""
        ...
