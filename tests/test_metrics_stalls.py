"""The series the stall alerts read (metrics/stalls.py): from the store, from Redis, from the plan.

The collector runs against fakes with an injected clock; the two store readings run against a real
SQLite store, the same code as production.
"""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest

from metrics.exporter import KeepaCollector
from metrics.stalls import SCHEDULER_TICK_KEY, scan_interval_s
from pipeline.watermark import Watermark
from storage.store import open_store
from tests.test_metrics_support import NOW_MS, FakeRedis, FakeStore, governor_snapshot, samples, value


def scrape(redis, store, *, minute_seconds=60.0) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KeepaCollector(redis, store, now_ms=lambda: NOW_MS, minute_seconds=minute_seconds))
    return samples(generate_latest(registry).decode())


def test_the_stall_series_read_the_last_scan_the_last_tick_and_the_oldest_claim():
    store = FakeStore(last_scan_ms=NOW_MS - 90_000, oldest_claim_ms=NOW_MS - 45_500)
    redis = FakeRedis(json.dumps(governor_snapshot()), others={SCHEDULER_TICK_KEY: str(NOW_MS - 20_000).encode()})
    parsed = scrape(redis, store)
    assert value(parsed, "keepa_feed_last_scan_timestamp_seconds") == (NOW_MS - 90_000) / 1000
    assert value(parsed, "keepa_scheduler_last_tick_timestamp_seconds") == (NOW_MS - 20_000) / 1000
    assert value(parsed, "keepa_candidate_oldest_claim_age_seconds") == 45.5
    # the snapshot is the 5/min plan: a page (5 tokens) may take 2 % of the refill, so one scan in 50 minutes
    assert value(parsed, "keepa_feed_scan_interval_seconds") == 3000


def test_the_scan_interval_follows_the_plan_and_the_length_of_a_keepa_minute():
    assert scan_interval_s(5, 60.0) == 3000
    assert scan_interval_s(20, 60.0) == 750
    assert scan_interval_s(1000, 60.0) == 60            # never more often than once a minute
    assert scan_interval_s(5, 2.0) == 100               # `make run`'s two-second Keepa minute
    assert scan_interval_s(0, 60.0) == scan_interval_s(None, 60.0) == 0


def test_never_scanned_never_ticked_and_nothing_claimed_read_zero():
    parsed = scrape(FakeRedis(None), FakeStore())
    for name in ("keepa_feed_last_scan_timestamp_seconds", "keepa_scheduler_last_tick_timestamp_seconds",
                 "keepa_candidate_oldest_claim_age_seconds", "keepa_feed_scan_interval_seconds"):
        assert value(parsed, name) == 0, name


def test_a_scheduler_tick_that_is_not_a_number_reads_as_never():
    parsed = scrape(FakeRedis(None, others={SCHEDULER_TICK_KEY: b"soon"}), FakeStore())
    assert value(parsed, "keepa_scheduler_last_tick_timestamp_seconds") == 0
    assert value(parsed, "keepa_exporter_source_up", source="redis") == 1


def test_a_database_that_fails_leaves_the_stall_series_at_zero_and_says_so():
    parsed = scrape(FakeRedis(None), FakeStore(fail=True, last_scan_ms=NOW_MS))
    assert value(parsed, "keepa_feed_last_scan_timestamp_seconds") == 0
    assert value(parsed, "keepa_exporter_source_up", source="database") == 0


def test_the_store_records_every_scanned_page_even_one_with_nothing_new(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/deals.db")
    try:
        assert store.feed_last_scan_ms() is None
        store.advance_watermark(Watermark(mark_ms=None, scan_top_ms=7_000, next_page=1), 8_000)
        assert store.feed_last_scan_ms() == 8_000                      # a page inside a scan
        store.advance_watermark(Watermark(mark_ms=7_000), 9_000, from_page=1)
        assert store.feed_last_scan_ms() == 9_000                      # the page that ends it
        store.advance_watermark(Watermark(mark_ms=7_000), 60_000, from_page=0)
        assert store.feed_last_scan_ms() == 60_000                     # a scan that found nothing new
        assert store.watermark_age_ms(60_000) == 51_000                # ... did not move the mark
    finally:
        store.close()


def test_the_store_reports_when_the_oldest_claim_still_held_was_taken(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/deals.db")
    try:
        store.upsert_deals([("B000000001", 1_000), ("B000000002", 1_000), ("B000000003", 1_000)], 1_000)
        assert store.oldest_claim_ms() is None
        first = store.take_candidates(1, 5_000)
        store.take_candidates(1, 7_000)
        assert store.oldest_claim_ms() == 5_000
        store.record_verdict(first[0], False, "not a deal", 8_000)      # its peek ended: no longer claimed
        assert store.oldest_claim_ms() == 7_000
    finally:
        store.close()
