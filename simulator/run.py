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
from pipeline import batching, driver
from pipeline.cadence import scan_due
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
    ``backfill_window`` bounds the first-stage calls (peeks; the old path's commits) outstanding
    at once, as the actors' window does; ``sequential`` counts commits in it too (the old backfiller,
    with a window of 1, peeked and committed one call at a time); ``peek_first`` False is
    the old path that rejected by full fetch. A number as ``cadence`` starts a scan every that many
    minutes. Every decision of the pipeline is :mod:`pipeline.driver`'s, as in the actors."""

    cadence: str | int = "adaptive"
    budget_fraction: float = 0.02
    peek_first: bool = True
    backfill_window: int = driver.PEEK_WINDOW
    sequential: bool = False
    latency_ms: int = 500
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
    failures: int = 0 # backfill only: its calls that failed in a row, 429s left out (driver.failures_after)

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
        self.window_out = 0                    # calls in the window (peeks; the old path's commits;
                                               # every call if sequential) asked for, not answered
        self.scan_active = False
        self.scans = 0
        self.memory: list[int] = []
        self._records: dict = {}
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
            self.store.release_candidate(Feed.asin(index))
        self.stats.lost_in_memory += len(self.memory)
        self.memory.clear()

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
                               work_pending=bool(self.waiting or self.store.candidates_waiting()))
            elif self.cfg.cadence == "every_minute":
                due = True
            else:
                due = self.last_scan_ms is None or self.now - self.last_scan_ms >= self.cfg.cadence * MINUTE_MS
            if due:
                self.scan_limit = driver.scan_start_pages(self._numbers(), self.feed_per_hour,
                                                          on_demand=self.cfg.on_demand)
                if self.scan_limit == 0:
                    return  # the queue covers what the tokens can do until the next scan
                self.scan_active = True
                self.scans += 1
                self.last_scan_ms = self.now
                self._ask_pages(self.store.load_watermark().next_page, self.scans)

    def _numbers(self) -> driver.PipelineNumbers:
        """What the scan depth reads, as the governor's live state and the store know it now."""
        return driver.PipelineNumbers(
            refill_per_minute=self._rate(), balance=self.policy.balance, cap=self.policy.cap,
            queued=self.store.candidates_waiting(), deals_stored=self.store.deals_stored(),
            downstream_tokens=self.stats.tokens[PEEK] + self.stats.tokens[COMMIT],
            page_cost=self.sc.deal_page_cost[1], budget_fraction=self.cfg.budget_fraction)

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
        first = self._counted(work.kind)
        self.window_out -= first
        singles = driver.after_rejection(work.keys)
        if singles is None:
            self.store.record_verdict(Feed.asin(work.key), False, reason, self.now)
            return
        for (index,) in singles:
            self.window_out += first  # the batch's window slot becomes one per single call
            self._ask(Work(work.kind, index, 0, self.now))

    def _counted(self, kind: str) -> bool:
        """Whether a call of ``kind`` takes a slot of the backfill window."""
        return kind == (PEEK if self.cfg.peek_first else COMMIT) or (self.cfg.sequential and kind == COMMIT)

    def _pump(self) -> None:
        policy, cfg, store = self.policy, self.cfg, self.store
        size = cfg.backfill_batch or batching.peek_batch(policy.rate)
        kind = PEEK if cfg.peek_first else COMMIT
        while store.candidates_waiting():
            claim = driver.peek_claim(self.window_out, size, cfg.backfill_window)
            if claim is None:
                break
            # a fixed batch (the old system's) is claimed whatever waits; the window's claims as the actors'
            asins = store.take_candidates(claim.at_most, self.now, at_least=1 if cfg.backfill_batch else claim.at_least)
            if not asins:
                break
            batch = [Feed.index(asin) for asin in asins]
            self.window_out += 1
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
        if work.kind == UPSERT:  # the pages of one grant are read at once (see actors.scan.FeedScan.upsert)
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
            outcome = _outcome(response.status)
            step = driver.after_failure(outcome, work.failures, response.envelope.refill_in_ms,
                                        message=f"HTTP {response.status}")
            if step.action == driver.RETRY:
                retry = Work(work.kind, work.key, work.attempt + 1, self.now, work.scan, work.batch,
                             failures=driver.failures_after(outcome, work.failures))
                self._at(self.now + step.delay_ms, RETRY, ("ask", retry, self._epoch))
                return
            self.window_out -= self._counted(work.kind)
            for index in work.keys:  # a dead end, visible: the ASINs carry the reason
                self.store.record_verdict(Feed.asin(index), False, step.reason, self.now)
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
                attempt = work.attempt if at == work.key else 0
                step = driver.after_failure(_outcome(response.status), attempt, response.envelope.refill_in_ms,
                                            bounded=False)
                retry = self._scan_work(at, work.scan, attempt + 1)
                self._at(self.now + step.delay_ms, RETRY, ("ask", retry, self._epoch))
                return
            more = self._on_page(work, response)
            if not more:
                return
        self._ask_pages(self.store.load_watermark().next_page, work.scan)

    def _on_page(self, work: Work, response: Response) -> bool:
        """Store one page and move the cursor; whether the scan reads on."""
        feed, store = self.feed, self.store
        deals = [(Feed.asin(index), feed.times[index], feed.deal_numbers(index)) for index in response.payload]
        news = []
        judged = driver.screen_page(deals, screen_on=self.cfg.screen)
        for index, (asin, deal_ms, reason) in zip(response.payload, judged, strict=True):
            first = store.upsert_deal(asin, deal_ms, self.now, reason or None)
            if first:
                if asin not in store.known:  # a known deal gets a light update only: no work
                    news.append(index)
                if deal_ms >= 0:
                    self.stats.on_fresh(self.now - deal_ms)
        self.page_news.append(news)
        stored = store.load_watermark()
        step = driver.after_page(stored, [deal_ms for _, deal_ms, _ in deals], numbers=self._numbers(),
                                 feed_per_hour=self.feed_per_hour, on_demand=self.cfg.on_demand)
        self.feed_per_hour, self.scan_limit = step.feed_per_hour, step.limit
        watermark, more = step.watermark, step.more
        if not self.cfg.ratchet and store.candidates_waiting():
            # the old rule: a run that could not process every deal it found is "incomplete" and
            # may not move the watermark; the next run starts again at page 0
            self.scan_active = False
            store.advance_watermark(type(watermark)(mark_ms=stored.mark_ms), self.now)
            return False
        store.advance_watermark(watermark, self.now)
        if not more:
            self.scan_active = False
            if self.cfg.cadence == "adaptive" and batching.scan_pages(self._rate()) > 1:
                # as the actors (Steps._follow_on): on a plan of several pages a grant, a scan past
                # its interval is followed at once (here judged on the governor's live state, there
                # on its last snapshot)
                self._scan_if_due()
        return more

    def _on_peek(self, work: Work, response: Response) -> None:
        self.window_out -= 1
        asins = [Feed.asin(index) for index in work.keys]
        self.stats.asins_peeked += len(asins)
        outcome = driver.peek_outcome(asins, dict(zip(asins, response.payload, strict=True)),
                                      commit_batch=self.cfg.commit_batch or batching.commit_batch(self.policy.rate))
        for asin, viable, reason in outcome.verdicts:
            if not viable:
                self.store.record_verdict(asin, False, reason, self.now)
        for chunk in outcome.commits:
            indexes = tuple(Feed.index(asin) for asin in chunk)
            self.window_out += self._counted(COMMIT)
            self._ask(Work(COMMIT, indexes[0], 0, self.now, batch=indexes if len(indexes) > 1 else ()))

    def _on_commit(self, work: Work, response: Response) -> None:
        self.window_out -= self._counted(COMMIT)
        asins = [Feed.asin(index) for index in work.keys]
        self.stats.asins_committed += len(asins)
        stats = dict(zip(asins, response.payload, strict=True))
        if not self.cfg.peek_first:  # the old path: a full fetch just to reject
            verdicts = driver.peek_outcome(asins, stats, commit_batch=1).verdicts
            for asin, viable, reason in verdicts:
                if not viable:
                    self.store.record_verdict(asin, False, reason, self.now)
            asins = [asin for asin, viable, _ in verdicts if viable]
        outcome = driver.commit_outcome([(asin, f"Synthetic product {asin}", stats[asin], 3) for asin in asins],
                                        self.store.deal_times(asins), self.now)
        for asin, reason in outcome.refused:
            self.store.record_verdict(asin, False, reason, self.now)
        for record in outcome.records:
            index = Feed.index(record.asin)
            if self.cfg.memory_batch:
                self.memory.append(index)
                self._records[index] = record
                if len(self.memory) >= self.cfg.memory_batch:
                    for held in self.memory:
                        self.store.store_deal(self._records.pop(held))
                    self.memory.clear()
            else:
                self.store.store_deal(record)


def _outcome(status: int) -> str:
    """The settle outcome of a simulated call's HTTP status, as the actors name it."""
    return {429: "429", 400: "400", 402: "402"}.get(status, "5xx")
