"""The simulation: one scenario, one policy, a virtual clock, the real pipeline steps.

Events run in time order from a heap; at equal times Keepa's refill comes first, so a refill that
overflows the cap while something waits is always seen. After every event the pipeline tops up its
requests and asks the policy to decide; grants run the Keepa call at once and settle after
``latency_ms``. Restarts (SIGKILL semantics) drop every call in flight: its tokens are spent, its
answer is lost, and the grant message is redelivered after ``redelivery_ms``.

A rogue consumer is another client of the same key: it makes one call a minute (at :30), and after
a 429 it waits ``refillIn + 100 ms`` and tries again, its later calls queued behind, as Keepa's own
clients do. Its retry therefore lands right after a refill; the pipeline's calls of that refill pass
the governor's wake, the broker and an actor before they reach Keepa, so the simulator serves the
rogue's retry first. Every policy thus faces the same external spend (a policy that spends every
refill at once cannot starve the other client and appear to beat the bound).
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

from governor.model import COMMIT, PEEK, UPSERT, Request
from keepa_api.tokens import merge_envelopes
from pipeline import batching
from pipeline.cadence import scan_due, upsert_interval_ms
from pipeline.commit import commit_record
from pipeline.scan_depth import feed_deals_per_hour, scan_depth_pages, tokens_per_feed_deal, tokens_until_next_scan
from pipeline.screen import screen
from pipeline.verdict import peek_verdict
from pipeline.watermark import MAX_PAGES
from simulator.feed import Feed
from simulator.keepa_model import KeepaModel, Response
from simulator.scenario import Scenario
from simulator.stats import RunStats
from storage.memory import MemoryStore

MINUTE_MS = 60_000
# event kinds, in the order they run at equal times
REFILL, RESTART, SETTLE, RETRY, TICK, ROGUE, WAKE = range(7)


@dataclass(frozen=True)
class PipelineConfig:
    """How the actors use the policy. ``cadence`` "adaptive" reads the feed as often as the plan
    affords (see :mod:`pipeline.cadence`); "every_minute" is the old Celery beat schedule.
    ``backfill_window`` bounds the peek requests outstanding at once (1 = the old sequential
    backfiller); ``peek_first`` False is the old path that rejected by full fetch. A number as
    ``cadence`` starts a scan every that many minutes."""

    cadence: str | int = "adaptive"
    budget_fraction: float = 0.02
    peek_first: bool = True
    backfill_window: int = 16
    latency_ms: int = 500
    retry_ms: int = 5_000
    redelivery_ms: int = 10_000
    # historical variants of the old system (seeds): keep the defaults for anything current
    backfill_batch: int = 0          # ASINs per first-stage call; 0 = the current rules of
                                     # pipeline.batching (peek batch by plan, full batches while
                                     # other peeks are outstanding); N = claim up to N at any time
    commit_batch: int = 0            # ASINs per commit call after a peek; 0 = pipeline.batching
    memory_batch: int = 0            # commits held in memory until this many are done (0: durable)
    ratchet: bool = True             # False: an "incomplete" scan never moves the watermark
    upsert_cost: int | None = None   # the old upserter reserved its product fetches too
    scan_pages: int = 0              # feed pages a scan call reads; 0 = pipeline.batching by plan,
                                     # 1 = the old upserter's page at a time
    # stage 0 (issue 12): both off is the old pipeline that peeked every new deal of an unfiltered feed
    query_filter: bool = True        # the deal query carries the rule's ranges: pages list only
                                     # deals that pass them (pipeline.screen.selection_ranges)
    screen: bool = True              # each new feed deal is judged on its own numbers first; one
                                     # that fails is stored screened-out and never peeked
    on_demand: bool = True           # a scan reads only as deep as the pipeline can consume before
                                     # the next one (pipeline.scan_depth); False: to the watermark


@dataclass(slots=True)
class Work:
    kind: str
    key: int          # page number, or deal index (the first one of a batch)
    attempt: int
    requested_ms: int
    scan: int = 0     # upsert only: which scan of the feed this page belongs to
    pages: int = 1    # upsert only: feed pages read under this grant, from ``key`` on
    batch: tuple = () # backfill batches: every deal index in the call
    rid: str = ""     # the request id, fixed when the work is asked for

    @property
    def request_id(self) -> str:
        if self.kind == UPSERT:
            return f"{self.kind}:{self.scan}.{self.key}:{self.attempt}"
        if self.batch:
            return f"{self.kind}:{self.key}x{len(self.batch)}:{self.attempt}"
        return f"{self.kind}:{self.key}:{self.attempt}"

    @property
    def keys(self) -> tuple:
        return self.batch or (self.key,)


class Simulation:
    def __init__(self, scenario: Scenario, policy, pipeline: PipelineConfig | None = None):
        self.sc = scenario
        self.policy = policy
        self.cfg = pipeline or PipelineConfig()
        self.feed = Feed(scenario)
        self.keepa = KeepaModel(scenario, self.feed)
        known = (Feed.asin(i) for i, k in enumerate(self.feed.known) if k)
        self.store = MemoryStore(known)
        self.stats = RunStats(scenario.start_tokens)
        self.now = 0
        self.end = scenario.minutes * MINUTE_MS
        self.events: list = []
        self._seq = 0
        self.waiting: dict[str, Work] = {}     # requested, not granted
        self.running: dict[str, Work] = {}     # granted, answer not yet back
        self._epoch = 0                        # bumps on every restart: older settles are void
        self._wake_at: int | None = None
        self._polls_token = hasattr(policy, "wants_token_sync")
        self.backfill_out = 0                  # peeks and commits asked for and not yet answered
        self.peeks_out = 0                     # of which peeks (the actors' OUTSTANDING_KEY)
        self.scan_active = False
        self.scans = 0
        self.memory: list[int] = []
        self._records: dict = {}
        self.scan_dirty = False
        self.last_scan_ms: int | None = None
        self.feed_per_hour: float | None = None  # how densely the feed lists deals (its first page)
        self.scan_limit = MAX_PAGES            # pages the current scan may read (scan on demand)
        self.pages_bought = 0                  # feed pages Keepa charged for
        self.page_news: list[list[int]] = []   # per page stored: the new deals it brought to work on
        self.rogue_owed = 0                    # the rogue's calls not yet taken by Keepa
        self.rogue_retry_ms: int | None = None # when its refused call is tried again

    # -- event plumbing -------------------------------------------------------------------------
    def _at(self, t: int, kind: int, payload=None) -> None:
        self._seq += 1
        heapq.heappush(self.events, (t, kind, self._seq, payload))

    def run(self) -> dict:
        started = time.perf_counter()
        policy, keepa = self.policy, self.keepa
        for minute in range(1, self.sc.minutes + 1):
            self._at(minute * MINUTE_MS, REFILL)
        if self.sc.rogue_tokens_per_minute:
            for minute in range(self.sc.minutes):
                self._at(minute * MINUTE_MS + 30_000, ROGUE)
        if self.sc.restart_every_minutes:
            for t in range(self.sc.restart_every_minutes, self.sc.minutes, self.sc.restart_every_minutes):
                self._at(t * MINUTE_MS, RESTART)
        self._at(0, TICK)
        if not self._polls_token:
            policy.sync(keepa.token(0), 0)  # the governor's one free /token call at start
        handlers = {REFILL: self._refill, RESTART: self._restart, SETTLE: self._settle, RETRY: self._retry,
                    TICK: self._tick, ROGUE: self._rogue, WAKE: lambda _: None}
        while self.events:
            t, kind, _, payload = heapq.heappop(self.events)
            if t > self.end:
                break
            self.now = t
            handlers[kind](payload)
            self._pump()
        self.now = self.end
        return self.stats.report(self, wall_s=time.perf_counter() - started)

    # -- events ---------------------------------------------------------------------------------
    def _refill(self, _) -> None:
        credited, lost = self.keepa.bucket.refill_once()
        self.stats.on_refill(lost, bool(self.waiting), self.keepa.bucket.balance)
        if self.rogue_retry_ms is not None and self.rogue_retry_ms <= self.now + 100:
            self._rogue_calls()  # its retry, due 100 ms after this refill, reaches Keepa first

    def _rogue(self, _) -> None:
        self.rogue_owed += 1
        if self.rogue_retry_ms is None:
            self._rogue_calls()

    def _rogue_calls(self) -> None:
        """The other client's owed calls, one after another until Keepa refuses one."""
        self.rogue_retry_ms = None
        while self.rogue_owed:
            refill_in_ms = self.keepa.rogue(self.now)
            if refill_in_ms is not None:
                self.rogue_retry_ms = self.now + refill_in_ms + 100
                break
            self.rogue_owed -= 1
        self.stats.on_balance(self.keepa.bucket.balance)

    def _restart(self, _) -> None:
        self._epoch += 1
        for work in self.running.values():
            self._at(self.now + self.cfg.redelivery_ms, RETRY, ("redeliver", work, self._epoch))
        self.stats.restarts += 1
        for index in self.memory:  # the old in-memory batch: paid for, never stored
            self.store.return_candidate(Feed.asin(index))
        self.stats.lost_in_memory += len(self.memory)
        self.memory.clear()
        self.scan_dirty = False

    def _tick(self, _) -> None:
        self._scan_if_due()
        self._at(self.now + MINUTE_MS, TICK)

    def _rate(self) -> int:
        """The plan's refill as the policy knows it, else as the scenario sets it now."""
        return getattr(self.policy, "rate", 0) or self.sc.schedule.rate_at(self.now // MINUTE_MS)

    def _scan_if_due(self) -> None:
        if not self.scan_active:
            if self.cfg.cadence == "adaptive":
                rate = self._rate()
                due = scan_due(now_ms=self.now, last_scan_ms=self.last_scan_ms, refill_per_minute=rate,
                               page_cost=self.sc.deal_page_cost[1], budget_fraction=self.cfg.budget_fraction,
                               balance=self.policy.balance, cap=self.policy.cap,
                               work_pending=bool(self.waiting or self.store.candidates))
            elif self.cfg.cadence == "every_minute":
                due = True
            else:
                due = self.last_scan_ms is None or self.now - self.last_scan_ms >= self.cfg.cadence * MINUTE_MS
            if due:
                self.scan_limit = self._scan_depth(scanning=False) if self.cfg.on_demand else MAX_PAGES
                if self.scan_limit == 0:
                    return  # the queue covers what the tokens can do until the next scan
                self.scan_active = True
                self.scans += 1
                self.last_scan_ms = self.now
                self._ask_pages(self.store.watermark.next_page, self.scans)

    def _scan_depth(self, *, scanning: bool) -> int:
        """How many more pages this scan reads: what the pipeline can consume before the next scan."""
        rate = self._rate()
        interval_ms = upsert_interval_ms(refill_per_minute=rate, page_cost=self.sc.deal_page_cost[1],
                                         budget_fraction=self.cfg.budget_fraction)
        available = tokens_until_next_scan(balance=self.policy.balance, refill_per_minute=rate,
                                           interval_ms=interval_ms, cap=self.policy.cap)
        queued = len(self.store.candidates)
        per_deal = tokens_per_feed_deal(downstream_tokens=self.stats.tokens[PEEK] + self.stats.tokens[COMMIT],
                                        deals_resolved=self.store.deals_stored() - queued)
        return scan_depth_pages(tokens_available=available, tokens_per_deal=per_deal, queued=queued,
                                refill_per_minute=rate, feed_per_hour=self.feed_per_hour, scanning=scanning)

    def _retry(self, payload) -> None:
        what, work, epoch = payload
        if what == "redeliver":
            if epoch == self._epoch and work.rid in self.running:
                self._call(work)  # the redelivered grant message runs the call again
        else:
            self._ask(work)

    # -- the pipeline ---------------------------------------------------------------------------
    def _ask(self, work: Work) -> None:
        work.requested_ms = self.now
        work.rid = work.request_id
        cost = self.cfg.upsert_cost if work.kind == UPSERT else None
        units = work.pages if work.kind == UPSERT else len(work.batch) or 1
        req = Request(work.rid, work.kind, units, self.now, cost, continues=work.kind == UPSERT)
        self.waiting[req.id] = work
        rejection = self.policy.request(req, self.now)
        self.stats.on_request(work.kind, self.policy.pending(work.kind))
        if rejection is not None:
            self._rejected(self.waiting.pop(req.id), rejection.reason)

    def _scan_work(self, page: int, scan: int, attempt: int = 0) -> Work:
        """A feed read from ``page`` on, as many pages a call as the actors ask for, never past
        Keepa's last page."""
        pages = self.cfg.scan_pages or batching.scan_pages(self._rate())
        return Work(UPSERT, page, attempt, self.now, scan, pages=max(1, min(pages, self.scan_limit - page)))

    def _ask_pages(self, page: int, scan: int) -> None:
        self._ask(self._scan_work(page, scan))

    def _rejected(self, work: Work, reason: str) -> None:
        """A request that can never be granted: split a batch into single calls; a single ASIN
        too expensive for the bucket is set aside with the reason (nothing is silently lost)."""
        self.stats.on_reject(work.kind, reason)
        if work.kind == UPSERT:
            self.scan_active = False
            return
        self.backfill_out -= 1
        self.peeks_out -= work.kind == PEEK
        if len(work.keys) > 1:
            for index in work.keys:
                self.backfill_out += 1
                self.peeks_out += work.kind == PEEK
                self._ask(Work(work.kind, index, 0, self.now))
        else:
            self.store.reject_candidate(Feed.asin(work.key), reason)

    def _pump(self) -> None:
        policy, cfg, store = self.policy, self.cfg, self.store
        size = cfg.backfill_batch or batching.peek_batch(policy.rate)
        kind = PEEK if cfg.peek_first else COMMIT
        while self.backfill_out < cfg.backfill_window and store.candidates:
            if not cfg.backfill_batch and len(store.candidates) < batching.peek_claim_minimum(size, self.peeks_out):
                break
            batch = []
            while len(batch) < size and store.candidates:
                batch.append(Feed.index(store.take_candidate()))
            self.backfill_out += 1
            self.peeks_out += kind == PEEK
            self._ask(Work(kind, batch[0], 0, self.now, batch=tuple(batch) if len(batch) > 1 else ()))
        if self._polls_token and policy.wants_token_sync(self.now):
            policy.sync(self.keepa.token(self.now), self.now)
        decision = policy.decide(self.now)
        for rejection in decision.rejections:
            work = self.waiting.pop(rejection.request.id, None)
            if work:
                self._rejected(work, rejection.reason)
        for grant in decision.grants:
            work = self.waiting.pop(grant.id)
            self.running[grant.id] = work
            self.stats.on_grant(work.kind, self.now - work.requested_ms, self.now)
            self._call(work)
        if self.waiting:
            self.stats.on_waiting(self.now)
        else:
            self.stats.on_idle(self.now)
        wake = decision.wake_at_ms
        if wake is not None and wake > self.now and (self._wake_at is None or wake < self._wake_at
                                                     or self._wake_at <= self.now):
            self._wake_at = wake
            self._at(wake, WAKE)

    def _call(self, work: Work) -> None:
        keepa, now = self.keepa, self.now
        if work.kind == UPSERT:  # the pages of one grant are read at once (see actors.steps.upsert)
            filtered = self.cfg.query_filter
            response = [keepa.deal_page(work.key + i, now, filtered) for i in range(work.pages)]
            self.stats.on_balance(keepa.bucket.balance)
            charged = [r.envelope.tokens_consumed for r in response]
            self.pages_bought += sum(1 for r in response if r.status == 200)
            self.stats.on_call(work.kind, sum(charged), max(charged))
            self._at(now + self.cfg.latency_ms, SETTLE, (work, response, self._epoch))
            return
        if work.kind == PEEK:
            response = keepa.peek(work.keys, now)
        else:
            response = keepa.commit(work.keys, now)
        self.stats.on_balance(keepa.bucket.balance)
        self.stats.on_call(work.kind, response.envelope.tokens_consumed)
        self._at(now + self.cfg.latency_ms, SETTLE, (work, response, self._epoch))

    def _settle(self, payload) -> None:
        work, response, epoch = payload
        if epoch != self._epoch:
            return  # the process that made this call was killed: its answer is lost
        rid = work.rid
        if self.running.pop(rid, None) is None:
            return
        if work.kind == UPSERT:
            self._settle_pages(work, response)
            return
        self.policy.settle(rid, response.envelope, self.now)
        if response.status != 200:
            self.stats.on_error(response.status)
            retry = Work(work.kind, work.key, work.attempt + 1, self.now, work.scan, work.batch)
            delay = response.envelope.refill_in_ms + 100 if response.status == 429 else self.cfg.retry_ms
            self._at(self.now + delay, RETRY, ("ask", retry, self._epoch))
            return
        {PEEK: self._on_peek, COMMIT: self._on_commit}[work.kind](work, response)

    def _settle_pages(self, work: Work, responses: list[Response]) -> None:
        """Settle a scan call with its pages' envelopes merged, then store the pages in page order:
        the page that ends the scan drops those after it; a failed page drops itself and those after
        it and is asked again, as the actors do."""
        self.policy.settle(work.rid, merge_envelopes([r.envelope for r in responses]), self.now)
        for at, response in enumerate(responses, start=work.key):
            if response.status != 200:
                self.stats.on_error(response.status)
                attempt = work.attempt + 1 if at == work.key else 1
                retry = self._scan_work(at, work.scan, attempt)
                delay = response.envelope.refill_in_ms + 100 if response.status == 429 else self.cfg.retry_ms
                self._at(self.now + delay, RETRY, ("ask", retry, self._epoch))
                return
            more = self._on_page(work, response)
            if not more:
                return
        self._ask_pages(self.store.watermark.next_page, work.scan)

    def _on_page(self, work: Work, response: Response) -> bool:
        """Store one page and move the cursor; whether the scan reads on."""
        feed, store = self.feed, self.store
        times, news = [], []
        for index in response.payload:
            deal_ms = feed.times[index]
            times.append(deal_ms)
            asin = Feed.asin(index)
            verdict = screen(*feed.deal_numbers(index)) if self.cfg.screen else None
            if verdict is not None and not verdict.viable:
                first = store.screen_out(asin, deal_ms, verdict.reason)
            else:
                first = store.upsert_deal(asin, deal_ms)
            if first:
                if asin not in store.known:  # a known deal gets a light update only: no work
                    news.append(index)
                if deal_ms >= 0:
                    self.stats.on_fresh(self.now - deal_ms)
        self.page_news.append(news)
        if self.cfg.on_demand:
            # judged again after every page: what the pipeline learnt a deal costs, how densely the
            # feed lists deals (its newest page), what is queued now
            if store.watermark.next_page == 0:
                self.feed_per_hour = feed_deals_per_hour(times) or self.feed_per_hour
            self.scan_limit = min(MAX_PAGES, store.watermark.next_page + 1 + self._scan_depth(scanning=True))
        watermark, more = store.watermark.advance(times, max_pages=self.scan_limit)
        if not self.cfg.ratchet and store.candidates:
            # the old rule: a run that could not process every deal it found is "incomplete" and
            # may not move the watermark; the next run starts again at page 0
            self.scan_active = False
            store.advance_watermark(type(watermark)(mark_ms=store.watermark.mark_ms))
            return False
        store.advance_watermark(watermark)
        if not more:
            self.scan_active = False
            if self.cfg.cadence == "adaptive" and batching.scan_pages(self._rate()) > 1:
                # as the actors (Steps._follow_on): on a plan of several pages a grant, a scan past
                # its interval is followed at once (here judged on the governor's live state, there
                # on its last snapshot)
                self._scan_if_due()
        return more

    def _on_peek(self, work: Work, response: Response) -> None:
        self.backfill_out -= 1
        self.peeks_out -= 1
        viable = []
        for index, stats in zip(work.keys, response.payload, strict=True):
            self.stats.asins_peeked += 1
            verdict = peek_verdict(stats)
            if verdict.viable:
                viable.append(index)
            else:
                self.store.reject_candidate(Feed.asin(index), verdict.reason)
        for chunk in batching.split(viable, self.cfg.commit_batch or batching.commit_batch(self.policy.rate)):
            self.backfill_out += 1
            self._ask(Work(COMMIT, chunk[0], 0, self.now, batch=tuple(chunk) if len(chunk) > 1 else ()))

    def _on_commit(self, work: Work, response: Response) -> None:
        self.backfill_out -= 1
        for index, stats in zip(work.keys, response.payload, strict=True):
            asin = Feed.asin(index)
            self.stats.asins_committed += 1
            verdict = peek_verdict(stats)
            if not verdict.viable:  # the old path: a full fetch just to reject
                self.store.reject_candidate(asin, verdict.reason)
                continue
            record = commit_record(asin=asin, title=f"Synthetic product {asin}", stats=stats,
                                   offers=3, deal_time_ms=self.feed.times[index], now_ms=self.now)
            if self.cfg.memory_batch:
                self.memory.append(index)
                self._records[index] = record
                if len(self.memory) >= self.cfg.memory_batch:
                    for held in self.memory:
                        self.store.store_deal(self._records.pop(held))
                    self.memory.clear()
            else:
                self.store.store_deal(record)
