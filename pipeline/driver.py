"""The pipeline's decisions, one pure module for both shells: the actors (:mod:`actors.scan`,
:mod:`actors.backfill`, :mod:`actors.product_calls`) and the simulator (:mod:`simulator.run`).

Each shell moves data (Dramatiq messages and a database, or an event heap and a memory store) and
asks this module what to do with it, so the simulator cannot drift from the stack:

- a feed page: which deals become candidates and which are screened out, with the reason
  (:func:`screen_page`); how far the watermark moves and whether the scan reads on, and how deep a
  scan reads at all (:func:`scan_start_pages`, :func:`after_page`: scan on demand);
- the peek window: whether to claim candidates for a peek now, and how many (:func:`peek_claim`);
- a peek answer: a verdict per ASIN and the commit calls of the viable ones (:func:`peek_outcome`);
- a commit answer: the stored deal, dated by the deal's own feed time (:func:`commit_outcome`);
- a failed call: ask again after how long, or set the ASINs aside (:func:`after_failure`); a request
  the governor can never grant: split the batch or set the ASIN aside (:func:`after_rejection`); a
  malformed product: ask for it alone again or set it aside (:func:`after_malformed_product`).

Time is an argument; nothing here reads a clock, a queue or a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pipeline import batching
from pipeline.cadence import upsert_interval_ms
from pipeline.commit import DealRecord, commit_record
from pipeline.scan_depth import feed_deals_per_hour, scan_depth_pages, tokens_per_feed_deal, tokens_until_next_scan
from pipeline.screen import screen
from pipeline.verdict import PeekStats, ViabilityRule, peek_verdict
from pipeline.watermark import MAX_PAGES, Watermark

DEFAULT_RULE = ViabilityRule()
PEEK_WINDOW = 16            # peeks asked for and not yet answered, at most (commits are not counted)
MAX_CALL_ATTEMPTS = 20      # failed /product calls (5xx, timeouts) in a row before their ASINs are set aside
MAX_PRODUCT_FAILURES = 3    # malformed answers for one product before it is set aside: asked alone twice
RETRY_BASE_MS, RETRY_CAP_MS = 1_000, 60_000
AFTER_REFILL_MS = 100       # a 429 is asked again this long after Keepa's refillIn


# -- the feed scan --------------------------------------------------------------------------------
def screen_page(deals: Iterable[tuple[str, int, tuple | None]], *, screen_on: bool,
                rule: ViabilityRule = DEFAULT_RULE) -> list[tuple[str, int, str | None]]:
    """``(asin, deal time, screened reason)`` per feed deal ``(asin, deal time, (current, avg))``:
    with the screen on, a deal whose own numbers fail ``rule`` carries ``"screened: <reason>"`` and is
    stored set aside, never peeked; ``None`` makes it a candidate for a peek. Numbers given as None
    (unreadable) leave the judgement to the peek, which reads fresh stats."""
    out = []
    for asin, deal_ms, numbers in deals:
        reason = None
        if screen_on and numbers is not None:
            verdict = screen(*numbers, rule)
            reason = None if verdict.viable else f"screened: {verdict.reason}"
        out.append((asin, deal_ms, reason))
    return out


@dataclass(frozen=True, slots=True)
class PipelineNumbers:
    """What the scan depth reads, as the shell knows it now: the plan (``refill_per_minute``, the
    bucket's ``balance`` and ``cap``), the queue (``queued`` candidates waiting, ``deals_stored`` in
    all) and ``downstream_tokens`` spent on peeks and commits so far."""

    refill_per_minute: float
    balance: float
    cap: float
    queued: int
    deals_stored: int
    downstream_tokens: float
    page_cost: float = 5
    budget_fraction: float = 0.02


def scan_depth(numbers: PipelineNumbers, feed_per_hour: float | None, *, scanning: bool) -> int:
    """Pages still worth reading from the next one on (:mod:`pipeline.scan_depth`): what the
    pipeline can consume before the next scan."""
    n = numbers
    interval_ms = upsert_interval_ms(refill_per_minute=n.refill_per_minute, page_cost=n.page_cost,
                                     budget_fraction=n.budget_fraction)
    available = tokens_until_next_scan(balance=n.balance, refill_per_minute=n.refill_per_minute,
                                       interval_ms=interval_ms, cap=n.cap)
    per_deal = tokens_per_feed_deal(downstream_tokens=n.downstream_tokens,
                                    deals_resolved=n.deals_stored - n.queued)
    return scan_depth_pages(tokens_available=available, tokens_per_deal=per_deal, queued=n.queued,
                            refill_per_minute=n.refill_per_minute, feed_per_hour=feed_per_hour,
                            scanning=scanning)


def scan_start_pages(numbers: PipelineNumbers | None, feed_per_hour: float | None, *, on_demand: bool) -> int:
    """How many pages a scan due now may read (0: do not start it, the queue covers what the tokens
    can do until the next scan). Without scan on demand, or numbers unknown, to the watermark."""
    if not on_demand or numbers is None:
        return MAX_PAGES
    return scan_depth(numbers, feed_per_hour, scanning=False)


@dataclass(frozen=True, slots=True)
class PageStep:
    watermark: Watermark
    more: bool                    # read the next page
    feed_per_hour: float | None   # the feed's density, learnt from page 0
    limit: int                    # the page this scan stops before (its depth as judged now)


def after_page(stored: Watermark, times_ms: list[int], *, numbers: PipelineNumbers | None,
               feed_per_hour: float | None, on_demand: bool, max_pages: int = MAX_PAGES) -> PageStep:
    """A page at ``stored.next_page`` was stored with deal times ``times_ms``: the watermark's move
    and whether the scan reads on. With scan on demand, the depth is judged again after every page
    on what the pipeline knows now (``numbers``) and the feed's density (its newest page)."""
    if stored.next_page == 0:
        feed_per_hour = feed_deals_per_hour(times_ms) or feed_per_hour
    limit = max_pages
    if on_demand and numbers is not None:
        limit = min(max_pages, stored.next_page + 1 + scan_depth(numbers, feed_per_hour, scanning=True))
    watermark, more = stored.advance(times_ms, max_pages=limit)
    return PageStep(watermark, more, feed_per_hour, limit)


# -- peeks and commits ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Claim:
    at_most: int    # candidates to claim for one peek call
    at_least: int   # claim none if fewer wait


def peek_claim(peeks_outstanding: int, batch: int, window: int = PEEK_WINDOW) -> Claim | None:
    """Whether another peek may be asked for with ``peeks_outstanding`` already (None: the window is
    full), and how many candidates it claims: a full ``batch`` while others are outstanding, any
    number when none is (:func:`pipeline.batching.peek_claim_minimum`)."""
    if peeks_outstanding >= window:
        return None
    return Claim(max(1, batch), batching.peek_claim_minimum(batch, peeks_outstanding))


@dataclass(frozen=True, slots=True)
class PeekOutcome:
    verdicts: list[tuple[str, bool, str]]   # (asin, viable, reason)
    commits: list[list[str]]                # the viable ASINs, in commit calls


def peek_outcome(asins: Sequence[str], stats: Mapping[str, PeekStats | None], *, commit_batch: int,
                 rule: ViabilityRule = DEFAULT_RULE) -> PeekOutcome:
    """The verdict on each peeked ASIN (``stats`` per ASIN; absent or None: Keepa gave none), and
    the viable ones cut into commit calls of ``commit_batch``."""
    verdicts = []
    for asin in asins:
        found = stats.get(asin)
        if found is None:
            verdicts.append((asin, False, "no stats from Keepa"))
            continue
        verdict = peek_verdict(found, rule)
        verdicts.append((asin, verdict.viable, verdict.reason))
    viable = [asin for asin, ok, _ in verdicts if ok]
    return PeekOutcome(verdicts, batching.split(viable, commit_batch))


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    records: list[DealRecord]
    refused: list[tuple[str, str]]   # (asin, reason): no deal can be made of it


def commit_outcome(products: Iterable[tuple[str, str, PeekStats | None, int]], deal_times_ms: Mapping[str, int],
                   now_ms: int) -> CommitOutcome:
    """The stored deals of a commit answer, ``(asin, title, stats, offers)`` per product. A deal is
    dated by its own feed time (``deal_times_ms``, as the light record holds it), not by the commit:
    the deal's age is what a reader of the deals wants, and it does not depend on how long the
    queue was."""
    records, refused = [], []
    for asin, title, stats, offers in products:
        if stats is None:
            refused.append((asin, "cannot make a deal: no stats from Keepa"))
            continue
        try:
            records.append(commit_record(asin=asin, title=title, stats=stats, offers=offers,
                                         deal_time_ms=deal_times_ms.get(asin, now_ms), now_ms=now_ms))
        except (ValueError, TypeError) as exc:
            refused.append((asin, f"cannot make a deal: {exc}"))
    return CommitOutcome(records, refused)


# -- failures -------------------------------------------------------------------------------------
RETRY, REJECT, SET_ASIDE = "retry", "reject", "set aside"


@dataclass(frozen=True, slots=True)
class FailureStep:
    action: str          # RETRY, REJECT (a verdict against each ASIN) or SET_ASIDE
    delay_ms: int = 0    # RETRY: ask again after this long
    reason: str = ""


def retry_delay_ms(outcome: str, attempt: int, refill_in_ms: int | None) -> int:
    """How long to wait before asking again after failed attempt ``attempt`` (0 the first): after a
    429 until Keepa's refill (``refillIn``) plus 100 ms, when the tokens are back (asking earlier
    only parks the request); after anything else 1 s doubling per attempt, at most 60 s, so an
    outage is not hammered."""
    if outcome == "429":
        return max(0, refill_in_ms or 0) + AFTER_REFILL_MS
    return min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** min(max(attempt, 0), 6))


def failures_after(outcome: str, failures: int) -> int:
    """The count of failed calls in a row after one more ended with ``outcome``. A 429 does not
    count: Keepa charged nothing and the governor paces the next ask, so a rogue client on the key
    cannot use up a call's failure budget (a storm of them pages as KeepaRateLimitStorm instead)."""
    return failures if outcome == "429" else failures + 1


def after_failure(outcome: str, attempt: int, refill_in_ms: int | None = None, *, bounded: bool = True,
                  message: str = "") -> FailureStep:
    """What follows a failed call whose settle outcome is ``outcome`` ("429", "400", "402", "5xx",
    "timeout", "malformed"); ``attempt`` counts the failures before it (:func:`failures_after`, 429s
    left out). A rejected request (400) never succeeds: REJECT. A 429 is always asked
    again (the governor paces them). Anything else is asked again until ``MAX_CALL_ATTEMPTS`` calls
    have failed in a row (``bounded``; a feed scan is not: the next scan reads the feed anyway), then
    SET_ASIDE. A call whose whole answer was malformed is judged per product by the shell
    (:func:`after_malformed_product`)."""
    if outcome == "400":
        return FailureStep(REJECT, reason=f"Keepa rejected the call: {message}")
    if outcome == "429" or not bounded or attempt + 1 < MAX_CALL_ATTEMPTS:
        return FailureStep(RETRY, retry_delay_ms(outcome, attempt, refill_in_ms))
    return FailureStep(SET_ASIDE, reason=f"Keepa failed {attempt + 1} calls in a row: {message}")


def after_malformed_product(failures: int) -> str:
    """A product's ``failures``-th malformed answer: RETRY (asked for alone) or SET_ASIDE."""
    return SET_ASIDE if failures >= MAX_PRODUCT_FAILURES else RETRY


def after_rejection(keys: Sequence) -> list[list] | None:
    """A request the governor can never grant: a batch is split into single calls (returned);
    a single one (None) is set aside with the governor's reason, nothing silently lost."""
    return [[key] for key in keys] if len(keys) > 1 else None
