"""What each pipeline actor does with its grant: call Keepa, store each unit at once, settle.

Order matters for crash safety: claim the grant, call, keep the answer in the claim, store (each
ASIN its own transaction), then settle with the governor, then ask for follow-ups. A crash anywhere
loses nothing already stored, and a grant delivered again never buys the same answer twice: it
stores the kept answer, or does nothing, or (its first call's outcome unknown) is released and
asked for again (:mod:`actors.grant_claims`). A malformed product is asked for again alone, at
most twice, then set aside (:meth:`Steps._product_failures`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

from dramatiq import Message

from actors.grant_claims import CALL, RELEASED, SKIP, STORE, GrantClaims
from actors.ledger import Ledger
from actors.messages import MalformedMessage, envelope_to, field
from actors.product_answer import ProductAnswer
from actors.scan_frontier import ASKED_KEY, SCAN_KEY, ScanFrontier
from keepa_api.tokens import merge_envelopes
from keepa_deals.errors import (
    BadKey,
    KeepaError,
    MalformedResponse,
    NotEnoughTokens,
    RequestRejected,
    TransientError,
)
from pipeline.batching import MAX_SCAN_PAGES, peek_claim_minimum, scan_pages, split
from pipeline.cadence import scan_due
from pipeline.commit import commit_record
from pipeline.verdict import peek_verdict
from pipeline.watermark import MAX_PAGES

log = logging.getLogger(__name__)

SELECTION = {"priceTypes": [1], "dateRange": 0, "sortType": 1}
LAST_SCAN_KEY = "keepa-deals:scan:last_ms"
OUTSTANDING_KEY = "keepa-deals:peek:outstanding"
PEEK_WINDOW = 16
MAX_PRODUCT_FAILURES = 3   # malformed answers for one product before it is set aside: asked alone twice
MAX_CALL_ATTEMPTS = 20     # failed calls (5xx, timeouts) in a row before their ASINs are set aside


class Steps:
    """The actors' imperative shell. ``rt`` is the runtime: broker, redis, store, client, clock."""

    def __init__(self, rt):
        self.rt = rt
        self.frontier = ScanFrontier(rt.redis, ttl_ms=30 * rt.minute_ms)
        self.claims = GrantClaims(rt.redis, rt.broker, rt.clock_ms)

    # -- messages to the governor ---------------------------------------------------------------
    def _to_governor(self, kind: str, body: dict) -> None:
        self.rt.broker.enqueue(Message(queue_name="governor", actor_name="keepa_governor",
                                       args=(kind, body), kwargs={}, options={}))

    def ask(self, rid: str, cls: str, payload: dict, units: int = 1, continues: bool = False) -> None:
        self._to_governor("request", {"id": rid, "cls": cls, "units": units, "continues": continues,
                                      "payload": payload})

    def settle(self, grant_id: str, endpoint: str, outcome: str, envelope=None, message: str = "") -> None:
        self._to_governor("settle", {"grant_id": grant_id, "endpoint": endpoint, "outcome": outcome,
                                     "envelope": envelope_to(envelope), "message": message})

    def _failed(self, grant_id: str, endpoint: str, exc: KeepaError) -> str:
        outcome = _outcome(exc)
        self.settle(grant_id, endpoint, outcome, exc.envelope, str(exc))
        return outcome

    def _retry(self, rid: str, attempt: int, cls: str, payload: dict, exc: KeepaError, **kw) -> None:
        """Ask again: at once after a 429 (the governor waits for the refill), later otherwise."""
        delay = None if isinstance(exc, NotEnoughTokens) else min(60_000, 1_000 * 2 ** min(attempt, 6))
        body = {"id": f"{rid.rsplit(':', 1)[0]}:{attempt + 1}", "cls": cls, "units": kw.get("units", 1),
                "continues": kw.get("continues", False), "payload": {**payload, "attempt": attempt + 1}}
        self.rt.broker.enqueue(Message(queue_name="governor", actor_name="keepa_governor",
                                       args=("request", body), kwargs={}, options={}), delay=delay)

    # -- the feed scan --------------------------------------------------------------------------
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
        scan, page = now_ms, rt.store.load_watermark().next_page
        if not self.frontier.start(scan, page):
            return False  # a scan is in progress
        rt.redis.set(LAST_SCAN_KEY, now_ms)
        self._ask_pages(scan, page)
        return True

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

    def _ask_pages(self, scan: int, page: int, attempt: int = 0, **retry) -> None:
        """Ask to read the feed from ``page`` on, as many pages a grant as the plan affords
        (:func:`pipeline.batching.scan_pages`, never past Keepa's last page); ``retry`` holds the
        failure for a later ask."""
        pages = max(1, min(self.rt.scan_pages(), MAX_PAGES - page))
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
        results = rt.read_pages(SELECTION, range(stored.next_page, end))  # in page order, as they come
        read = []  # the answers taken from ``results`` so far; the settle needs every call's envelope
        more = True
        for at, result in enumerate(results, start=stored.next_page):
            read.append(result)
            if isinstance(result, KeepaError):
                self.settle(grant_id, "deal", _outcome(result), _merged(read, results), str(result))
                if isinstance(result, BadKey):
                    frontier.end(scan)
                    raise result
                if frontier.advance(scan, page, at):
                    self._ask_pages(scan, at, payload.get("attempt", 0) if at == page else 0, exc=result)
                return
            now = rt.clock_ms()
            times = [int(deal.last_update.timestamp() * 1000) for deal in result.deals]
            rt.store.upsert_deals(zip([deal.asin for deal in result.deals], times, strict=True), now)
            watermark, more = stored.advance(times)
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
            self._ask_pages(scan, stored.next_page)
        self.top_up()
        if not more:
            self._follow_on()

    # -- peek and commit ------------------------------------------------------------------------
    def top_up(self) -> int:
        """Claim candidates and ask to peek them, keeping at most PEEK_WINDOW peeks outstanding.

        Each peek carries a full batch; a part-filled one goes only when no other peek is outstanding
        (:func:`pipeline.batching.peek_claim_minimum`). A window slot is taken before claiming, so
        concurrent threads never both send a part-filled batch."""
        rt = self.rt
        batch = rt.peek_batch()
        asked = 0
        while True:
            others = rt.redis.incr(OUTSTANDING_KEY) - 1
            asins = []
            if others < PEEK_WINDOW:
                asins = rt.store.take_candidates(batch, rt.clock_ms(), at_least=peek_claim_minimum(batch, others))
            if not asins:
                rt.redis.decr(OUTSTANDING_KEY)
                return asked
            self.ask(f"peek:{asins[0]}x{len(asins)}:0", "peek", {"asins": asins}, units=len(asins))
            asked += 1

    def ask_commits(self, asins: list[str]) -> None:
        """Ask to commit viable ASINs, in calls of the plan's commit batch; the ids follow from the
        ASINs, so a redelivered peek asks for the same commits again (the governor drops repeats)."""
        for chunk in split(asins, self.rt.commit_batch()):
            rid = f"commit:{chunk[0]}x{len(chunk)}:0" if len(chunk) > 1 else f"commit:{chunk[0]}:0"
            self.ask(rid, "commit", {"asins": chunk}, units=len(chunk))

    def _asins(self, payload: dict, where: str) -> list[str]:
        asins = field(payload, "asins", list, where)
        if not asins or not all(isinstance(a, str) and len(a) == 10 for a in asins):
            raise MalformedMessage(f"{where}: asins must be a non-empty list of 10-character ASINs")
        return asins

    def _paid_answer(self, endpoint: str, grant_id: str, payload: dict, asins: list[str]):
        """The grant's paid-for /product answer and this attempt's claim token, or None when there is
        nothing to store. Keepa is called only under a fresh claim (:mod:`actors.grant_claims`): a copy
        of the grant whose answer was kept stores that answer; a copy that finds a live one at work,
        or the grant settled, does nothing; a copy whose predecessor died mid-call releases the
        grant (settled with no envelope) and asks again under a new id, never calling under this one."""
        begun = self.claims.begin(grant_id)
        if begun.action == SKIP:
            log.info("%s %s: %s by %s; no call made", endpoint, grant_id, begun.previous.state,
                     begun.previous.owner[:8])
            return None
        if begun.action == STORE:
            log.info("%s %s: its answer was paid for already; storing it, no call made", endpoint, grant_id)
            return ProductAnswer.from_json(begun.previous.answer), begun.token
        if begun.repeat:
            log.warning("%s %s: the worker making this call died; released and asked for again", endpoint, grant_id)
            self.settle(grant_id, endpoint, "timeout", None, "its worker died mid-call: outcome unknown, released")
            self._retry(grant_id, payload.get("attempt", 0), endpoint, payload,
                        TransientError("outcome unknown"), units=len(asins))
            self.claims.finish(grant_id, begun.token, RELEASED)
            return None
        try:
            # a commit stores stats, title and the offer count, never the price history: history=0
            # costs the same tokens and spares Keepa, the wire and the decoder the 36 csv series
            rt = self.rt
            batch = rt.client.peek(asins) if endpoint == "peek" else rt.client.commit(asins, history=False)
        except KeepaError as exc:
            try:
                self._call_failed(endpoint, grant_id, payload, asins, exc)
            except BadKey:
                self.claims.finish(grant_id, begun.token)
                raise
            except BaseException:  # a later copy finds the attempt ended: it releases and asks again
                self.claims.ended(begun.token)
                raise
            self.claims.finish(grant_id, begun.token)
            return None
        except BaseException:
            self.claims.ended(begun.token)
            raise
        answer = ProductAnswer.from_batch(batch)
        self.claims.answered(grant_id, begun.token, answer.to_json())
        return answer, begun.token

    def _call_failed(self, endpoint: str, grant_id: str, payload: dict, asins: list[str], exc: KeepaError) -> None:
        """Settle a failed /product call, then give each of its ASINs its next step, every path bounded:
        a rejected request (400) never succeeds, so its ASINs are rejected with Keepa's reason; an
        answer that was paid for but unreadable as a whole counts as a malformed answer for each ASIN
        (:meth:`_product_failures`); a bad key stops the actor; anything else is asked for again, up
        to ``MAX_CALL_ATTEMPTS`` calls, then its ASINs are set aside."""
        rt = self.rt
        self._failed(grant_id, endpoint, exc)
        if isinstance(exc, BadKey):
            raise exc
        now, attempt = rt.clock_ms(), payload.get("attempt", 0)
        if isinstance(exc, RequestRejected):
            rt.store.record_verdicts([(a, False, f"Keepa rejected the {endpoint}: {exc}") for a in asins], now)
        elif isinstance(exc, MalformedResponse):
            self._product_failures(endpoint, dict.fromkeys(asins, str(exc)), now)
        elif isinstance(exc, NotEnoughTokens) or attempt + 1 < MAX_CALL_ATTEMPTS:
            self._retry(grant_id, attempt, endpoint, payload, exc, units=len(asins))
            return
        else:
            for asin in asins:
                rt.store.set_aside(asin, endpoint, f"Keepa failed {attempt + 1} calls in a row: {exc}", now)
        if endpoint == "peek":
            rt.redis.decr(OUTSTANDING_KEY)

    def _product_failures(self, stage: str, failed: dict[str, str], now: int) -> None:
        """Count a malformed answer for each ASIN of ``failed`` (asin -> the decoder's reason): ask
        again for it alone while it has failed fewer than ``MAX_PRODUCT_FAILURES`` times, else set it
        aside (no more calls until an operator replays it)."""
        rt = self.rt
        for asin, reason in failed.items():
            count = rt.store.record_product_failure(asin, stage, reason, now)
            if count >= MAX_PRODUCT_FAILURES:
                rt.store.set_aside(asin, stage, reason, now)
                continue
            log.warning("%s %s: malformed answer %d (%s); asking for it alone", stage, asin, count, reason)
            if stage == "peek":
                rt.redis.incr(OUTSTANDING_KEY)  # a window slot for the single peek
            self.ask(f"peek:{asin}x1:m{count}" if stage == "peek" else f"commit:{asin}:m{count}", stage,
                     {"asins": [asin]})

    def peek(self, grant_id: str, payload: dict) -> None:
        rt = self.rt
        asins = self._asins(payload, "peek")
        paid = self._paid_answer("peek", grant_id, payload, asins)
        if paid is None:
            return
        answer, token = paid
        try:
            now = rt.clock_ms()
            failed = _failed_products(asins, answer)
            found = {p.asin: p for p in answer.products}
            verdicts = []
            for asin in asins:
                if asin in failed:
                    continue
                stats = found[asin].stats if asin in found else None
                verdict = peek_verdict(stats, rt.rule) if stats else None
                verdicts.append((asin, bool(verdict and verdict.viable),
                                 verdict.reason if verdict else "no stats from Keepa"))
            rt.store.record_verdicts(verdicts, now)
            self._product_failures("peek", failed, now)
            self.ask_commits([asin for asin, viable, _ in verdicts if viable])
            self.settle(grant_id, "peek", _answer_outcome(answer), answer.envelope)
        except BaseException:
            self.claims.ended(token)
            raise
        self.claims.finish(grant_id, token)
        rt.redis.decr(OUTSTANDING_KEY)
        self.top_up()

    def commit(self, grant_id: str, payload: dict) -> None:
        rt = self.rt
        asins = self._asins(payload, "commit")
        paid = self._paid_answer("commit", grant_id, payload, asins)
        if paid is None:
            return
        answer, token = paid
        try:
            now = rt.clock_ms()
            failed = _failed_products(asins, answer)
            answered = {product.asin for product in answer.products}
            for asin in asins:  # nothing Keepa left out stays "viable" for ever: set it aside, saying why
                if asin not in answered and asin not in failed:
                    rt.store.record_verdict(asin, False, "Keepa's commit answer had no product for it", now)
            for product in answer.products:
                try:
                    record = commit_record(asin=product.asin, title=product.title, stats=product.stats,
                                           offers=product.offers, deal_time_ms=now, now_ms=now)
                except (ValueError, TypeError) as exc:
                    rt.store.record_verdict(product.asin, False, f"cannot make a deal: {exc}", now)
                    continue
                rt.store.store_deal(record)
            self._product_failures("commit", failed, now)
            self.settle(grant_id, "commit", _answer_outcome(answer), answer.envelope)
        except BaseException:
            self.claims.ended(token)
            raise
        self.claims.finish(grant_id, token)

    def rejected(self, request_id: str, cls: str, payload: dict, reason: str) -> None:
        """The governor can never grant this request: split a batch, or set the ASIN aside."""
        rt = self.rt
        if cls == "upsert":
            scan = payload.get("scan") if isinstance(payload, dict) else None
            if isinstance(scan, int):
                self.frontier.end(scan)
            else:
                rt.redis.delete(SCAN_KEY, ASKED_KEY)
            return
        asins = payload.get("asins") or []
        if len(asins) > 1:
            if cls == "peek":  # the batch's window slot becomes one per single peek
                rt.redis.incrby(OUTSTANDING_KEY, len(asins) - 1)
            for asin in asins:
                self.ask(f"{cls}:{asin}x1:0", cls, {"asins": [asin]})
            return
        if cls == "peek":
            rt.redis.decr(OUTSTANDING_KEY)
        for asin in asins:
            rt.store.record_verdict(asin, False, reason, rt.clock_ms())


def _outcome(exc: KeepaError) -> str:
    """The settle's outcome for a failed call."""
    outcome = {429: "429", 402: "402", 400: "400", 404: "400", 405: "400"}.get(exc.status or 0)
    if outcome is None:
        outcome = "malformed" if isinstance(exc, MalformedResponse) else ("5xx" if exc.status else "timeout")
    return outcome


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


def _failed_products(asins: list[str], answer: ProductAnswer) -> dict[str, str]:
    """The asked ASINs whose product was malformed, with the decoder's reason. A malformed product
    whose own ASIN was unreadable is blamed on the asked ASINs the answer has no product for."""
    asked = set(asins)
    failed = {asin: reason for asin, reason in answer.failed if asin in asked}
    unnamed = [reason for asin, reason in answer.failed if asin is None]
    if unnamed:
        answered = {p.asin for p in answer.products}
        failed.update({a: unnamed[0] for a in asins if a not in answered and a not in failed})
    return failed


def _answer_outcome(answer: ProductAnswer) -> str:
    return "malformed" if answer.failed and not answer.products else "ok"


def dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))
