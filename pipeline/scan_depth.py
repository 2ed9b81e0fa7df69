"""Scan on demand: how many feed pages a scan reads, newest first.

A scan reads page 0, 1, ... newest first and stops at the watermark, at a short page or at Keepa's
10,000-deal limit. With a backlog deeper than the tokens can work through, reading on to the
watermark buys pages (5 tokens each) whose deals nobody will ever peek: by the next scan newer deals
have arrived, and they come first. So when the feed lists deals faster than the refill can consume
them, a scan reads only as deep as the pipeline can consume before the next scan: the tokens it will
have by then (the balance plus the refill over the scan interval, at least a full bucket), divided
by what one feed deal costs downstream (its peek, and its commit when viable), less the candidates
already queued, with some headroom so the pipeline never runs dry. When the refill keeps up with the
feed, every deal read will be used, and the scan reads on to the watermark. When the queue alone
covers the tokens to come, no scan is needed now: a page read then would wait behind the queue
(candidates are worked through in the order they were first seen) and, on a plan that never catches
up, never be used. Freshness is served by reading newest first: every scan starts at page 0, and the
depth is judged again after every page, as the pipeline learns what a feed deal costs it.

One set of pure functions for the simulator and the actors, both through :mod:`pipeline.driver`.
"""

from __future__ import annotations

from math import ceil

from pipeline.watermark import MAX_PAGES, PAGE_SIZE

#: what a feed deal is assumed to cost downstream before any has been worked through: one peek,
#: the least it can cost, so the first scans read deep rather than shallow
PRIOR_TOKENS_PER_FEED_DEAL = 1.0
HEADROOM = 1.5


def tokens_until_next_scan(*, balance: float, refill_per_minute: float, interval_ms: int, cap: float) -> float:
    """The tokens the pipeline should have work for until the next scan: the balance plus the
    refill over the interval, and never less than a full bucket (``cap``, an hour of refill): a
    scan that leaves less work queued than a full bucket can spend lets refills overflow the cap
    with nothing to do, and a deal skipped now is behind the watermark for good."""
    return max(balance + refill_per_minute * interval_ms / 60_000, cap)


def tokens_per_feed_deal(*, downstream_tokens: float, deals_resolved: int,
                         prior: float = PRIOR_TOKENS_PER_FEED_DEAL) -> float:
    """What one deal read from the feed has cost the pipeline so far: tokens spent on peeks and
    commits over the new deals worked through (peeked, committed, screened out, or already known);
    ``prior`` until a deal has been."""
    if deals_resolved <= 0 or downstream_tokens <= 0:
        return prior
    return downstream_tokens / deals_resolved


def feed_deals_per_hour(page_times_ms: list[int]) -> float | None:
    """How densely the feed lists deals, from one page's deal times (None: too few to tell)."""
    if len(page_times_ms) < 2:
        return None
    span_ms = max(page_times_ms) - min(page_times_ms)
    return None if span_ms <= 0 else (len(page_times_ms) - 1) * 3_600_000 / span_ms


def refill_keeps_up(*, refill_per_minute: float, tokens_per_deal: float, feed_per_hour: float | None) -> bool:
    """Whether the refill consumes deals at least as fast as the feed lists them (False while the
    feed's density is unknown)."""
    return feed_per_hour is not None and refill_per_minute * 60 / tokens_per_deal >= feed_per_hour


def scan_depth_pages(*, tokens_available: float, tokens_per_deal: float, queued: int, refill_per_minute: float,
                     feed_per_hour: float | None, scanning: bool, page_size: int = PAGE_SIZE,
                     max_pages: int = MAX_PAGES, headroom: float = HEADROOM) -> int:
    """Pages still worth reading, from the next page on (0: none now).

    ``tokens_available`` until the next scan, ``tokens_per_deal`` downstream, ``queued`` candidates
    waiting already (those of this scan's pages included); ``feed_per_hour`` is how densely the feed
    lists deals (:func:`feed_deals_per_hour`; None while unknown); ``scanning``: a scan is under way
    (else one would start). When the refill keeps up with the feed, every deal read will be used and
    a deal skipped would be behind the watermark for good, so a scan under way reads on to the
    watermark, and one starts as soon as the queue no longer covers the tokens to come.
    """
    if tokens_per_deal <= 0:
        raise ValueError(f"tokens_per_deal must be positive, got {tokens_per_deal}")
    if page_size < 1 or max_pages < 1:
        raise ValueError("page_size and max_pages must be >= 1")
    wanted = headroom * max(0.0, tokens_available) / tokens_per_deal - queued
    pages = min(ceil(wanted / page_size), max_pages) if wanted > 0 else 0
    keeps_up = refill_keeps_up(refill_per_minute=refill_per_minute, tokens_per_deal=tokens_per_deal,
                               feed_per_hour=feed_per_hour)
    if keeps_up and (scanning or pages > 0):
        return max_pages
    return pages
