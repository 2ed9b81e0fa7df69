"""The feed scan: start one when the plan affords it, read its pages under grants, store each page.

A scan reads Keepa's deal feed (/deal, newest first) from page 0 down to the watermark, the newest
deal stored by the scan before (:mod:`pipeline.watermark`), as a chain of upsert grants of one or
more pages each (:class:`actors.scan_frontier.ScanFrontier` keeps the chain from forking). Each
page's deals are screened on their own numbers (:mod:`pipeline.screen`) and stored as light records;
those that pass become candidates for a peek (:mod:`actors.backfill`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from actors.asks import Asks, outcome_of
from actors.grant_claims import CALL
from actors.ledger import Ledger
from actors.messages import MalformedMessage, field
from actors.scan_frontier import ASKED_KEY, SCAN_KEY
from keepa_api.tokens import merge_envelopes
from keepa_base.errors import BadKey, KeepaError, MalformedResponse
from pipeline import driver
from pipeline.batching import MAX_SCAN_PAGES, scan_pages
from pipeline.cadence import scan_due
from pipeline.screen import selection_ranges
from pipeline.watermark import MAX_PAGES

log = logging.getLogger(__name__)

SELECTION = {"priceTypes": [1], "dateRange": 0, "sortType": 1}   # the feed unfiltered, newest first
LAST_SCAN_KEY = "keepa-deals:scan:last_ms"
FEED_DENSITY_KEY = "keepa-deals:scan:feed_per_hour"   # deals an hour the feed lists, from its newest page


class FeedScan(Asks):
    """Mixed into :class:`actors.steps.Steps`, whose ``rt``, ``frontier``, ``selection``, ``claims``
    and ``top_up`` (a scan's end claims the new candidates) it uses."""

    def start_scan(self, now_ms: int, snapshot: dict | None) -> bool:
        """Start a feed scan if one is due for this plan (see :mod:`pipeline.cadence`) and none runs.
        Cadence is reckoned in Keepa minutes, which the embedded server may shorten."""
        rt = self.rt
        snap = snapshot or {}
        rate = snap.get("refill_rate") or 0
        pending = bool(snap and (sum(snap["pending"].values()) or rt.store.candidates_waiting()))
        last = rt.redis.get(LAST_SCAN_KEY)
        to_keepa = 60_000 / rt.minute_ms
        if rate and not scan_due(now_ms=int(now_ms * to_keepa),
                                 last_scan_ms=int(int(last) * to_keepa) if last else None,
                                 refill_per_minute=rate, balance=snap.get("balance"), cap=snap.get("cap"),
                                 work_pending=pending):
            return False
        limit = driver.scan_start_pages(self._numbers(snapshot), self._feed_per_hour(), on_demand=True)
        if limit == 0:
            return False  # the queue covers what the tokens can do until the next scan
        scan, page = now_ms, rt.store.load_watermark().next_page
        if not self.frontier.start(scan, page):
            return False  # a scan is in progress
        rt.redis.set(LAST_SCAN_KEY, now_ms)
        self._ask_pages(scan, page, limit=page + limit)
        return True

    def _numbers(self, snapshot: dict | None) -> driver.PipelineNumbers | None:
        """What the scan depth reads (:func:`pipeline.driver.scan_depth`): the plan and the tokens
        spent downstream from the governor's snapshot, the queue from the store; None without a
        snapshot (the scan then reads to the watermark)."""
        if not snapshot or not snapshot.get("refill_rate"):
            return None
        spent = snapshot.get("tokens_consumed_total") or {}
        store = self.rt.store
        return driver.PipelineNumbers(
            refill_per_minute=snapshot["refill_rate"], balance=snapshot.get("balance") or 0,
            cap=snapshot.get("cap") or 0, queued=store.candidates_waiting(), deals_stored=store.deals_stored(),
            downstream_tokens=spent.get("peek", 0) + spent.get("commit", 0))

    def _feed_per_hour(self) -> float | None:
        value = self.rt.redis.get(FEED_DENSITY_KEY)
        return float(value) if value else None

    def ask_again_if_lost(self, snapshot: dict | None) -> bool:
        """Ask again for the grant the running scan recorded as asked, if the governor's snapshot
        shows no feed read pending or in flight: a process that died between recording the ask and
        sending it would otherwise leave the scan waiting for its key's time to live (30 Keepa
        minutes). The id is the first ask's, so the governor drops it if that ask did arrive."""
        if not snapshot or snapshot["pending"].get("upsert") or snapshot["in_flight"].get("upsert"):
            return False
        running, asked = self.rt.redis.mget(SCAN_KEY, ASKED_KEY)
        if not running or not asked:
            return False
        scan, _, page = asked.decode().partition(":")
        if scan != running.decode() or not page.isdigit():  # another scan's marker, or "end"
            return False
        log.info("scan %s: asking again for its pages from %s (no feed read pending or in flight)", scan, page)
        self._ask_pages(int(scan), int(page))
        return True

    def _follow_on(self) -> None:
        """On a plan that reads several pages a grant, start the next scan at once if the plan's
        interval has passed since the one that just ended began, instead of at the scheduler's next
        tick: a fast feed grows by many pages in a minute, and what a scan cannot reach before
        Keepa's 10,000-deal limit is never read. Smaller or unknown plans, and any failure here,
        leave it to the tick."""
        try:
            snapshot = Ledger(self.rt.redis).read_snapshot()
            if snapshot and scan_pages(snapshot.get("refill_rate") or 0) > 1:
                self.start_scan(self.rt.clock_ms(), snapshot)
        except Exception as exc:  # the scan itself is stored and settled; the tick starts the next
            log.warning("could not start the next scan at once (%s); the scheduler's tick will", exc)

    def _ask_pages(self, scan: int, page: int, attempt: int = 0, limit: int = MAX_PAGES, **retry) -> None:
        """Ask to read the feed from ``page`` on, as many pages a grant as the plan affords
        (:func:`pipeline.batching.scan_pages`, never past Keepa's last page nor the scan's depth
        ``limit``); ``retry`` holds the failure for a later ask."""
        pages = max(1, min(self.rt.scan_pages(), min(limit, MAX_PAGES) - page))
        payload = {"scan": scan, "page": page, "pages": pages}
        if retry:
            self._retry(f"upsert:{scan}.{page}:{attempt}", attempt, "upsert", payload, retry["exc"],
                        continues=True, units=pages)
        else:
            self.ask(f"upsert:{scan}.{page}:0", "upsert", payload, units=pages, continues=True)

    def upsert(self, grant_id: str, payload: dict) -> None:
        """Run a feed-scan grant under its claim (:mod:`actors.grant_claims`): a copy of a grant that
        is settled, or that a live worker is running, does nothing. A copy whose predecessor died or
        failed reads again the pages that were not stored; those calls are counted as repeated."""
        begun = self.claims.begin(grant_id)
        if begun.action != CALL:
            log.info("upsert %s: %s by %s; no call made", grant_id, begun.previous.state, begun.previous.owner[:8])
            return
        try:
            self._upsert(grant_id, payload, repeat=begun.repeat)
        except BaseException:
            self.claims.ended(begun.token)
            raise
        self.claims.finish(grant_id, begun.token)

    def _upsert(self, grant_id: str, payload: dict, repeat: bool = False) -> None:
        """Read the granted feed pages at once and store them strictly in page order as they arrive
        (storing overlaps reading), moving the stored cursor one page at a time and only from where it
        stands (compare and set).

        A grant may run again (Dramatiq's redelivery, a retry after a database error, the
        governor's resend): pages before the stored cursor are not read again, and a cursor that
        another run moved on stops this one. A crash therefore resumes at the first page not stored
        and no page is ever skipped. Only the run of the grant asked for last may ask for the next
        (:class:`actors.scan_frontier.ScanFrontier`), so a scan stays one chain of grants. The page
        that ends the scan drops the pages after it; a failed page drops itself and those after it,
        and is asked again. A scan's end may start the next one at once (:meth:`_follow_on`)."""
        rt = self.rt
        page, scan = field(payload, "page", int, "upsert"), field(payload, "scan", int, "upsert")
        pages = payload.get("pages", 1)
        if type(pages) is not int or not 1 <= pages <= MAX_SCAN_PAGES or page < 0:
            raise MalformedMessage(f"upsert: page must be >= 0 and pages 1 to {MAX_SCAN_PAGES}, "
                                   f"got {page!r}, {pages!r}")
        frontier = self.frontier
        if not frontier.claim(scan):
            log.info("upsert %s: its scan is over or another one runs; no call made", grant_id)
            self.settle(grant_id, "deal", "ok", None, "scan over or replaced: no call made")
            return
        stored = rt.store.load_watermark()
        end = page + pages
        if not page <= stored.next_page < end:
            # all of it stored already (a repeat): the scan is over, goes on under a later grant,
            # or (a crash before the ask) waits for this grant to ask for the next pages
            self.settle(grant_id, "deal", "ok", None, "pages stored already: no call made")
            if not stored.scanning:
                frontier.end(scan)
            elif stored.next_page == end and frontier.advance(scan, page, end):
                self._ask_pages(scan, end)
            return
        if repeat:
            self.claims.count_repeated(end - stored.next_page)
        results = rt.read_pages(self.selection, range(stored.next_page, end))  # in page order, as they come
        read = []  # the answers taken from ``results`` so far; the settle needs every call's envelope
        more, limit = True, MAX_PAGES
        snapshot = Ledger(rt.redis).read_snapshot()
        for at, result in enumerate(results, start=stored.next_page):
            read.append(result)
            if isinstance(result, KeepaError):
                self.settle(grant_id, "deal", outcome_of(result), _merged(read, results), str(result))
                if isinstance(result, BadKey):
                    frontier.end(scan)
                    raise result
                if frontier.advance(scan, page, at):
                    self._ask_pages(scan, at, payload.get("attempt", 0) if at == page else 0, exc=result)
                return
            now = rt.clock_ms()
            times = [int(deal.last_update.timestamp() * 1000) for deal in result.deals]
            rt.store.upsert_deals(self._light_records(result.deals, times), now)
            step = driver.after_page(stored, times, numbers=self._numbers(snapshot),
                                     feed_per_hour=self._feed_per_hour(), on_demand=True)
            if at == 0 and step.feed_per_hour:
                rt.redis.set(FEED_DENSITY_KEY, step.feed_per_hour)
            watermark, more, limit = step.watermark, step.more, step.limit
            stored = rt.store.advance_watermark(watermark, now, from_page=at)
            if stored != watermark:  # another run of this grant moved the cursor: it goes on
                log.info("upsert %s: the cursor moved on to %s under this run; it stops", grant_id, stored)
                self.settle(grant_id, "deal", "ok", _merged(read, results))
                return
            if not more:
                break
        self.settle(grant_id, "deal", "ok", _merged(read, results))
        if not more:
            frontier.end(scan)
        elif frontier.advance(scan, page, stored.next_page):
            self._ask_pages(scan, stored.next_page, limit=limit)
        self.top_up()
        if not more:
            self._follow_on()

    def _light_records(self, deals, times: list[int]) -> list[tuple[str, int, str | None]]:
        """``(asin, deal time, screened reason)`` per feed deal: with the deal screen on, a deal whose
        own numbers fail the viability rule carries the verdict's reason and is stored set aside
        (never peeked); ``None`` makes it a candidate for a peek, the confirmation with fresh stats."""
        screen_on = self.rt.screen_deals
        judged = [(deal.asin, at, _feed_numbers(deal) if screen_on else None)
                  for deal, at in zip(deals, times, strict=True)]
        return driver.screen_page(judged, screen_on=screen_on, rule=self.rt.rule)

    def scan_rejected(self, payload) -> None:
        """The governor can never grant this scan's pages: the scan ends, the next tick starts another."""
        scan = payload.get("scan") if isinstance(payload, dict) else None
        if isinstance(scan, int):
            self.frontier.end(scan)
        else:
            self.rt.redis.delete(SCAN_KEY, ASKED_KEY)


def deal_selection(rule, screen_query: bool) -> dict:
    """The deal query the scan sends: with ``screen_query`` it carries the rule's ranges
    (:func:`pipeline.screen.selection_ranges`: NEW price, 90-day date range), so Keepa leaves out
    deals that cannot pass before it pages the feed; without, the feed unfiltered."""
    return {**SELECTION, **selection_ranges(rule)} if screen_query else dict(SELECTION)


def _feed_numbers(deal) -> tuple | None:
    """A feed deal's ``(current, avg)``, decoded on first read; None if malformed (the screen then
    leaves the judgement to the peek, which reads fresh stats)."""
    try:
        return deal.current, deal.avg
    except MalformedResponse as exc:
        log.debug("deal %s: feed numbers unreadable (%s); the peek judges it", deal.asin, exc)
        return None


def read_pages(client, selection: dict, pages: range, pool=None) -> Iterator:
    """The feed pages ``pages`` read at once on ``pool``'s threads (one page: on this thread), yielded
    in page order as each arrives: each a DealPage or the KeepaError of its call."""
    def read(page):
        try:
            return client.deals(selection, page)
        except KeepaError as exc:
            return exc
    if len(pages) == 1 or pool is None:
        return iter([read(page) for page in pages])
    return pool.map(read, pages)


def _merged(read: list, rest: Iterator):
    """The envelope to settle a scan grant with: every call's, those still arriving in ``rest`` too
    (each was charged). A call with no answer may or may not have been charged: then None, as for
    any such call, rather than numbers that leave its charge out."""
    read.extend(rest)
    envelopes = [r.envelope for r in read]
    return merge_envelopes(envelopes) if all(e is not None for e in envelopes) else None
