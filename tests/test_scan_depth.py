"""Scan on demand (pipeline.scan_depth): a scan reads only as deep as the pipeline can consume."""

import pytest

from pipeline.scan_depth import (
    PRIOR_TOKENS_PER_FEED_DEAL,
    feed_deals_per_hour,
    refill_keeps_up,
    scan_depth_pages,
    tokens_per_feed_deal,
    tokens_until_next_scan,
)
from pipeline.watermark import MAX_PAGES

HOUR_MS = 3_600_000


def depth(**changes):
    args = {"tokens_available": 300, "tokens_per_deal": 2.0, "queued": 0, "refill_per_minute": 5,
            "feed_per_hour": 1_000.0, "headroom": 1.0, "scanning": False}
    args.update(changes)
    return scan_depth_pages(**args)


def test_a_scan_reads_the_pages_the_tokens_until_the_next_scan_can_consume():
    assert depth() == 1                                   # 300 tokens / 2 a deal = 150 deals
    assert depth(tokens_available=3_000) == 10            # 1,500 deals
    assert depth(tokens_available=3_001) == 11            # a part page is a page


def test_candidates_already_queued_come_off_the_depth():
    assert depth(tokens_available=3_000, queued=600) == 6
    assert depth(tokens_available=3_000, queued=1_500) == 0


def test_no_tokens_to_come_means_no_page_is_worth_reading():
    assert depth(tokens_available=-2_000) == 0


def test_headroom_reads_a_little_deeper_so_the_pipeline_never_runs_dry():
    assert depth(tokens_available=3_000, headroom=1.5) == 15


def test_a_deep_read_stops_at_keepas_10000_deal_limit():
    assert depth(tokens_available=10**9) == MAX_PAGES


def test_a_scan_under_way_reads_on_to_the_watermark_when_the_refill_keeps_up_with_the_feed():
    # 5 a minute at 2 tokens a deal consumes 150 deals an hour: a feed listing fewer is read whole,
    # since every deal read will be used and a deal skipped is behind the watermark for good
    assert depth(feed_per_hour=150.0, queued=10**6, scanning=True) == MAX_PAGES
    assert depth(feed_per_hour=151.0, queued=10**6, scanning=True) == 0
    assert depth(feed_per_hour=None, queued=10**6, scanning=True) == 0  # unknown density: tokens alone


def test_no_scan_starts_while_the_queue_covers_the_tokens_to_come_even_when_the_refill_keeps_up():
    assert depth(feed_per_hour=100.0, queued=150) == 0
    assert depth(feed_per_hour=100.0, queued=149) == MAX_PAGES


def test_the_tokens_until_the_next_scan_are_never_fewer_than_a_full_bucket():
    assert tokens_until_next_scan(balance=100, refill_per_minute=5, interval_ms=50 * 60_000, cap=300) == 350
    assert tokens_until_next_scan(balance=-2_000, refill_per_minute=20, interval_ms=HOUR_MS, cap=1_200) == 1_200


def test_a_feed_deal_costs_what_the_pipeline_spent_on_the_deals_it_worked_through():
    assert tokens_per_feed_deal(downstream_tokens=260, deals_resolved=100) == 2.6
    assert tokens_per_feed_deal(downstream_tokens=0, deals_resolved=0) == PRIOR_TOKENS_PER_FEED_DEAL


def test_the_feeds_density_comes_from_one_pages_deal_times():
    assert feed_deals_per_hour([0, HOUR_MS // 2, HOUR_MS]) == 2.0
    assert feed_deals_per_hour([5]) is None
    assert feed_deals_per_hour([5, 5]) is None


def test_a_cost_per_deal_of_zero_is_refused_by_name():
    with pytest.raises(ValueError, match="tokens_per_deal"):
        depth(tokens_per_deal=0)


def test_the_refill_keeps_up_when_it_consumes_deals_as_fast_as_the_feed_lists_them():
    assert refill_keeps_up(refill_per_minute=5, tokens_per_deal=2.0, feed_per_hour=150.0)
    assert not refill_keeps_up(refill_per_minute=5, tokens_per_deal=2.0, feed_per_hour=150.5)
    assert not refill_keeps_up(refill_per_minute=10**6, tokens_per_deal=1.0, feed_per_hour=None)
