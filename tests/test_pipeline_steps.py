"""The pure pipeline steps: watermark ratchet, peek verdict, commit record, feed cadence."""

import pytest

from pipeline.cadence import scan_due, upsert_interval_ms
from pipeline.commit import commit_record
from pipeline.verdict import PeekStats, ViabilityRule, peek_verdict
from pipeline.watermark import Watermark

MINUTE = 60_000


def page(newest, count=150, step=1):
    return [newest - i * step for i in range(count)]


class TestWatermark:
    def test_the_first_scan_reads_until_a_short_page_then_marks_the_newest_deal(self):
        wm, more = Watermark().advance(page(1000))
        assert more and wm.next_page == 1 and wm.mark_ms is None
        wm, more = wm.advance(page(850, count=20))
        assert not more and wm.mark_ms == 1000 and wm.next_page == 0

    def test_a_scan_stops_at_the_page_that_reaches_back_to_the_mark(self):
        wm = Watermark(mark_ms=900)
        wm, more = wm.advance(page(1000))  # 1000 .. 851 reaches the mark
        assert not more and wm.mark_ms == 1000

    def test_out_of_order_deals_inside_a_page_do_not_stop_the_scan_early(self):
        shuffled = page(2000)[::-1]  # oldest first inside the page
        wm, more = Watermark(mark_ms=1000).advance(shuffled)
        assert more and wm.scan_top_ms == 2000

    def test_the_mark_moves_even_when_a_scan_ends_at_the_page_limit(self):
        wm = Watermark(mark_ms=0)
        for n in range(3):
            wm, more = wm.advance(page(10_000 - n * 150), max_pages=3)
        assert not more and wm.mark_ms == 10_000

    def test_the_mark_never_moves_backwards(self):
        wm, _ = Watermark(mark_ms=5000).advance(page(4000, count=10))
        assert wm.mark_ms == 5000

    def test_an_empty_feed_ends_the_scan_without_inventing_a_mark(self):
        wm, more = Watermark().advance([])
        assert not more and wm.mark_ms is None

    def test_resuming_after_a_crash_rereads_but_never_skips(self):
        feed = list(range(1000, 0, -1))            # deal times, newest first
        wm, _ = Watermark().advance(feed[:150])   # page 0 stored, then the process dies
        seen = set(feed[:150])
        feed = list(range(1030, 1000, -1)) + feed  # 30 new deals push the old ones down a page
        page_1 = feed[150 * wm.next_page:150 * (wm.next_page + 1)]
        wm, more = wm.advance(page_1)
        seen |= set(page_1)
        assert more and wm.next_page == 2
        assert set(range(min(page_1), 1001)) <= seen  # re-read 30, skipped none


class TestVerdict:
    def test_a_deep_drop_with_a_good_rank_is_viable(self):
        assert peek_verdict(PeekStats(2000, 3200, 5000)).viable

    @pytest.mark.parametrize(
        ("stats", "why"),
        [
            (PeekStats(-1, 3000, 5000), "no new offer"),
            (PeekStats(2900, 3000, 5000), "below the 20.0% rule"),
            (PeekStats(2000, -1, 5000), "no 90-day average"),
            (PeekStats(2000, 3200, 900_000), "sales rank"),
            (PeekStats(2000, 3200, -1), "sales rank"),
        ],
    )
    def test_a_rejection_says_why(self, stats, why):
        verdict = peek_verdict(stats)
        assert not verdict.viable and why in verdict.reason

    def test_the_rule_is_configurable_and_validated(self):
        assert peek_verdict(PeekStats(2900, 3000, 5000), ViabilityRule(min_drop_percent=3)).viable
        with pytest.raises(ValueError, match="min_drop_percent"):
            ViabilityRule(min_drop_percent=120)


def test_commit_turns_a_product_into_the_stored_deal():
    record = commit_record(asin="B000000001", title="x", stats=PeekStats(2000, 3200, 5000), offers=4,
                           deal_time_ms=7, now_ms=9)
    assert (record.drop_percent, record.offers, record.committed_ms) == (37.5, 4, 9)
    with pytest.raises(ValueError, match="B000000002"):
        commit_record(asin="B000000002", title="x", stats=PeekStats(-1, -1, 1), offers=0, deal_time_ms=0, now_ms=0)


class TestCadence:
    def test_page_reading_spends_a_small_share_of_the_plan(self):
        assert upsert_interval_ms(refill_per_minute=5) == 50 * MINUTE
        assert upsert_interval_ms(refill_per_minute=20) == int(12.5 * MINUTE)
        assert upsert_interval_ms(refill_per_minute=1000) == MINUTE

    def test_a_full_idle_bucket_makes_pages_free(self):
        assert upsert_interval_ms(refill_per_minute=5, balance=295, cap=300, work_pending=False) == MINUTE
        assert upsert_interval_ms(refill_per_minute=5, balance=295, cap=300, work_pending=True) == 50 * MINUTE

    def test_a_scan_is_due_first_at_start_then_after_the_interval(self):
        assert scan_due(now_ms=0, last_scan_ms=None, refill_per_minute=5)
        assert not scan_due(now_ms=49 * MINUTE, last_scan_ms=0, refill_per_minute=5)
        assert scan_due(now_ms=50 * MINUTE, last_scan_ms=0, refill_per_minute=5)
