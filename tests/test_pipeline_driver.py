"""The pipeline's decisions (pipeline.driver): pure, no clock, no queue, no database."""

import pytest

from pipeline import driver
from pipeline.verdict import PeekStats, ViabilityRule
from pipeline.watermark import MAX_PAGES, PAGE_SIZE, Watermark

PASSING = ([-1, 2_000, -1, 1_500], [[-1] * 4, [-1] * 4, [-1] * 4, [-1, 3_200, -1, -1]])   # a 37.5 % drop
FAILING = ([-1, 2_910, -1, 1_500], [[-1] * 4, [-1] * 4, [-1] * 4, [-1, 3_000, -1, -1]])   # a 3 % drop
VIABLE = PeekStats(price_new=2_000, avg90_new=3_200, sales_rank=1_000)
NOT_VIABLE = PeekStats(price_new=2_900, avg90_new=3_000, sales_rank=5_000)


def numbers(**kw) -> driver.PipelineNumbers:
    base = {"refill_per_minute": 20, "balance": 0, "cap": 1_200, "queued": 0, "deals_stored": 0,
            "downstream_tokens": 0}
    return driver.PipelineNumbers(**{**base, **kw})


# -- the screen -----------------------------------------------------------------------------------
def test_screen_page_marks_a_failing_deal_screened_with_its_reason_and_leaves_a_passing_one_a_candidate():
    judged = driver.screen_page([("A", 1, PASSING), ("B", 2, FAILING), ("C", 3, None)], screen_on=True)
    assert judged[0] == ("A", 1, None) and judged[2] == ("C", 3, None)   # unreadable numbers: the peek judges
    assert judged[1][:2] == ("B", 2) and judged[1][2].startswith("screened: drop 3.0% below")


def test_screen_page_with_the_screen_off_makes_every_deal_a_candidate():
    assert driver.screen_page([("B", 2, FAILING)], screen_on=False) == [("B", 2, None)]


def test_screen_page_applies_the_rule_it_is_given():
    lax = ViabilityRule(min_drop_percent=2.0)
    assert driver.screen_page([("B", 2, FAILING)], screen_on=True, rule=lax) == [("B", 2, None)]


# -- scan on demand -------------------------------------------------------------------------------
def test_a_scan_starts_only_when_the_queue_no_longer_covers_the_tokens_to_come():
    # a full bucket of 1,200 tokens at 1 token a deal, x1.5 headroom: 1,800 deals are worth queueing
    assert driver.scan_start_pages(numbers(queued=2_000), None, on_demand=True) == 0
    assert driver.scan_start_pages(numbers(queued=0), None, on_demand=True) == 12   # 1,800 / 150
    assert driver.scan_start_pages(numbers(queued=2_000), None, on_demand=False) == MAX_PAGES
    assert driver.scan_start_pages(None, None, on_demand=True) == MAX_PAGES         # nothing known yet


def test_the_depth_follows_what_a_deal_has_cost_downstream():
    # 600 deals worked through for 6,000 tokens: 10 a deal, so 1,800 tokens' worth is 180 deals, 2 pages
    assert driver.scan_start_pages(numbers(deals_stored=600, downstream_tokens=6_000), None, on_demand=True) == 2


def test_after_page_stops_a_scan_at_its_depth_and_learns_the_feed_density_from_page_0():
    times = [1_000_000 - i * 1_000 for i in range(PAGE_SIZE)]   # one deal a second: 3,600 an hour
    # 1,800 queued (this page's included) cover the 1,800 deals' worth of tokens to come
    step = driver.after_page(Watermark(), times, numbers=numbers(queued=1_800), feed_per_hour=None,
                             on_demand=True)
    assert step.feed_per_hour == pytest.approx(3_600) and not step.more and step.limit == 1
    assert step.watermark == Watermark(mark_ms=1_000_000)   # the scan ends: the watermark moves to its top


def test_after_page_reads_on_to_the_watermark_without_scan_on_demand():
    times = [1_000_000 - i * 1_000 for i in range(PAGE_SIZE)]
    step = driver.after_page(Watermark(), times, numbers=numbers(queued=1_790), feed_per_hour=None,
                             on_demand=False)
    assert step.more and step.limit == MAX_PAGES and step.watermark.next_page == 1


def test_after_page_reads_on_while_the_refill_keeps_up_with_the_feed():
    times = [1_000_000 - i * 60_000 for i in range(PAGE_SIZE)]   # one deal a minute; 20 tokens buy 20
    step = driver.after_page(Watermark(), times, numbers=numbers(queued=1_790), feed_per_hour=None,
                             on_demand=True)
    assert step.more and step.limit == MAX_PAGES


# -- the peek window ------------------------------------------------------------------------------
def test_peek_claim_takes_a_full_batch_while_others_are_outstanding_and_any_number_when_none_is():
    assert driver.peek_claim(0, 10) == driver.Claim(at_most=10, at_least=1)
    assert driver.peek_claim(3, 10) == driver.Claim(at_most=10, at_least=10)
    assert driver.peek_claim(driver.PEEK_WINDOW - 1, 10) is not None
    assert driver.peek_claim(driver.PEEK_WINDOW, 10) is None   # the window counts peeks only


# -- peek and commit answers ----------------------------------------------------------------------
def test_peek_outcome_gives_a_verdict_per_asin_and_commits_the_viable_ones_in_batches():
    stats = {"A": VIABLE, "B": NOT_VIABLE, "C": VIABLE, "D": VIABLE}
    outcome = driver.peek_outcome(["A", "B", "C", "D", "E"], stats, commit_batch=2)
    assert [(a, ok) for a, ok, _ in outcome.verdicts] == [("A", True), ("B", False), ("C", True), ("D", True),
                                                          ("E", False)]
    assert outcome.verdicts[4][2] == "no stats from Keepa"
    assert outcome.commits == [["A", "C"], ["D"]]


def test_commit_outcome_dates_each_deal_by_its_feed_time_not_by_the_commit():
    outcome = driver.commit_outcome([("A", "t", VIABLE, 3), ("B", "t", VIABLE, 3)], {"A": 1_000}, now_ms=9_000)
    assert [(r.asin, r.deal_time_ms, r.committed_ms) for r in outcome.records] == [("A", 1_000, 9_000),
                                                                                   ("B", 9_000, 9_000)]
    assert outcome.refused == []


def test_commit_outcome_refuses_a_product_no_deal_can_be_made_of_saying_why():
    bad = PeekStats(price_new=-1, avg90_new=-1, sales_rank=1)
    outcome = driver.commit_outcome([("A", "t", bad, 3), ("B", "t", None, 3)], {}, now_ms=0)
    assert outcome.records == []
    assert [a for a, _ in outcome.refused] == ["A", "B"] and all("cannot make a deal" in r for _, r in outcome.refused)


# -- failures -------------------------------------------------------------------------------------
def test_a_429_is_asked_again_when_keepa_refills():
    step = driver.after_failure("429", attempt=30, refill_in_ms=4_200)
    assert step == driver.FailureStep(driver.RETRY, 4_300)   # never set aside: the governor paces 429s


def test_other_failures_back_off_doubling_to_a_minute_then_set_aside_after_twenty():
    delays = [driver.after_failure("5xx", attempt).delay_ms for attempt in range(8)]
    assert delays == [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
    assert driver.after_failure("timeout", driver.MAX_CALL_ATTEMPTS - 2).action == driver.RETRY
    last = driver.after_failure("timeout", driver.MAX_CALL_ATTEMPTS - 1, message="boom")
    assert last.action == driver.SET_ASIDE and last.reason == "Keepa failed 20 calls in a row: boom"


def test_an_unbounded_failure_is_always_asked_again():
    assert driver.after_failure("5xx", 500, bounded=False).action == driver.RETRY


def test_a_rejected_request_is_never_asked_again():
    assert driver.after_failure("400", 0, message="bad").action == driver.REJECT


def test_a_malformed_product_is_asked_for_alone_twice_then_set_aside():
    assert [driver.after_malformed_product(n) for n in (1, 2, 3)] == [driver.RETRY, driver.RETRY, driver.SET_ASIDE]


def test_a_rejected_batch_is_split_and_a_single_one_set_aside():
    assert driver.after_rejection(["A", "B"]) == [["A"], ["B"]]
    assert driver.after_rejection(["A"]) is None
