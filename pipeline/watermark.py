"""The deal-feed watermark: a ratchet that always moves.

Keepa's ``/deal`` pages come newest first (order inside a page is not strict). A scan reads page 0,
1, ... and stops at a short page, at a page that reaches back to the watermark (its oldest deal is at
or before it), or at Keepa's 10,000-deal limit. The cursor (``next_page``, ``scan_top_ms``) is saved
after every page, so a crash resumes the scan where it was; new deals only push old ones to later
pages, so resuming re-reads at worst, never skips. When a scan ends for any reason, the watermark
moves to the newest deal the scan saw: the old system refused to move it on "incomplete" runs and
read page 0 forever (seed 2026-02-07).
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE_SIZE = 150
MAX_PAGES = 10_000 // PAGE_SIZE + 1


@dataclass(frozen=True, slots=True)
class Watermark:
    mark_ms: int | None = None
    scan_top_ms: int | None = None
    next_page: int = 0

    @property
    def scanning(self) -> bool:
        return self.next_page > 0

    def advance(self, page_times_ms: list[int], *, page_size: int = PAGE_SIZE,
                max_pages: int = MAX_PAGES) -> tuple[Watermark, bool]:
        """Account for one page just stored; return the new state and whether to read the next page."""
        top = self.scan_top_ms
        if page_times_ms:
            page_top = max(page_times_ms)
            top = page_top if top is None else max(top, page_top)
        short = len(page_times_ms) < page_size
        reached = self.mark_ms is not None and page_times_ms and min(page_times_ms) <= self.mark_ms
        last = self.next_page + 1 >= max_pages
        if short or reached or last:
            mark = self.mark_ms if top is None else max(top, self.mark_ms or top)
            return Watermark(mark_ms=mark), False
        return Watermark(self.mark_ms, top, self.next_page + 1), True
