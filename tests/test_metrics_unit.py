"""The exporter's collector against fakes of Redis and the store: no network, no clock (now is injected)."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest

from governor.model import CLASSES
from metrics.exporter import KeepaCollector, build_registry
from metrics.families import ENDPOINTS, OUTCOMES, UNREAD_WHEN_DOWN
from tests.test_metrics_support import (
    EXPECTED_NAMES,
    NOW_MS,
    FakeRedis,
    FakeStore,
    all_finite,
    governor_snapshot,
    helps,
    samples,
    value,
)


def scrape(redis, store, now_ms=NOW_MS) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KeepaCollector(redis, store, now_ms=lambda: now_ms))
    return generate_latest(registry).decode()


def test_every_series_exists_at_zero_before_the_governor_writes_a_snapshot():
    text = scrape(FakeRedis(None), FakeStore())
    parsed = samples(text)
    assert set(helps(text)) == EXPECTED_NAMES
    assert value(parsed, "keepa_governor_up") == 0
    assert value(parsed, "keepa_exporter_source_up", source="redis") == 1
    assert value(parsed, "keepa_exporter_source_up", source="database") == 1
    others = {k: v for k, v in parsed.items() if k[0] != "keepa_exporter_source_up"}
    assert set(others.values()) == {0.0}
    for cls in CLASSES:
        assert value(parsed, "keepa_requests_pending", **{"class": cls}) == 0
        assert value(parsed, "keepa_grant_wait_seconds_bucket", **{"class": cls, "le": "+Inf"}) == 0
    for endpoint in ENDPOINTS:
        for outcome in OUTCOMES:
            assert value(parsed, "keepa_calls_total", endpoint=endpoint, outcome=outcome) == 0


def test_values_follow_the_governor_snapshot():
    snap = governor_snapshot()
    parsed = samples(scrape(FakeRedis(json.dumps(snap)), FakeStore(), now_ms=NOW_MS + 4000))
    assert value(parsed, "keepa_governor_up") == 1
    assert value(parsed, "keepa_governor_leader") == 1
    assert value(parsed, "keepa_governor_snapshot_age_seconds") == 4.0
    assert value(parsed, "keepa_tokens_balance") == snap["balance"]
    assert value(parsed, "keepa_tokens_cap") == 300
    assert value(parsed, "keepa_refill_rate_tokens_per_minute") == 5
    assert snap["recharge"]["active"], "10 tokens on the 5/min plan is below the recharge mark"
    assert value(parsed, "keepa_recharge_active") == 1
    assert value(parsed, "keepa_recharge_exit_by_timestamp_seconds") == snap["recharge"]["exit_by_ms"] / 1000
    assert value(parsed, "keepa_recharge_entries_total") == 1
    for cls in CLASSES:
        assert value(parsed, "keepa_requests_pending", **{"class": cls}) == snap["pending"][cls]
        assert value(parsed, "keepa_grants_total", **{"class": cls}) == snap["grants_total"][cls]
    assert value(parsed, "keepa_requests_pending", **{"class": "commit"}) == 1
    assert value(parsed, "keepa_grants_total", **{"class": "upsert"}) == 1
    assert value(parsed, "keepa_last_grant_timestamp_seconds") == snap["last_grant_ms"] / 1000
    assert value(parsed, "keepa_calls_total", endpoint="deal", outcome="429") == 2
    assert value(parsed, "keepa_calls_total", endpoint="commit", outcome="402") == 1
    assert value(parsed, "keepa_calls_total", endpoint="token", outcome="ok") == 0


def test_calls_repeated_and_products_set_aside_come_from_shared_state():
    from actors.grant_claims import REPEATED_KEY

    parsed = samples(scrape(FakeRedis(None, others={REPEATED_KEY: b"7"}), FakeStore(set_aside=3)))
    assert value(parsed, "keepa_calls_repeated_total") == 7
    assert value(parsed, "keepa_products_set_aside") == 3


def test_grant_waits_become_a_seconds_histogram_per_class():
    parsed = samples(scrape(FakeRedis(json.dumps(governor_snapshot())), FakeStore()))
    upsert = {"class": "upsert"}
    assert value(parsed, "keepa_grant_wait_seconds_bucket", le="1.0", **upsert) == 0
    assert value(parsed, "keepa_grant_wait_seconds_bucket", le="5.0", **upsert) == 1
    assert value(parsed, "keepa_grant_wait_seconds_bucket", le="+Inf", **upsert) == 1
    assert value(parsed, "keepa_grant_wait_seconds_count", **upsert) == 1
    assert value(parsed, "keepa_grant_wait_seconds_sum", **upsert) == 3.0
    assert value(parsed, "keepa_grant_wait_seconds_count", **{"class": "peek"}) == 0


def test_deals_per_minute_is_the_last_five_minutes_of_commits_divided_by_five():
    store = FakeStore(stored=40, ingested=12, recent=3, last_ms=NOW_MS - 90_000, waiting=7,
                      watermark_ms=NOW_MS - 600_000)
    parsed = samples(scrape(FakeRedis(None), store))
    assert store.since_asked[0] == NOW_MS - 5 * 60_000
    assert value(parsed, "keepa_deals_ingested_per_minute") == 0.6
    assert value(parsed, "keepa_deals_ingested_total") == 12
    assert value(parsed, "keepa_deals_stored") == 40
    assert value(parsed, "keepa_candidates_waiting") == 7
    assert value(parsed, "keepa_last_deal_ingested_timestamp_seconds") == (NOW_MS - 90_000) / 1000
    assert value(parsed, "keepa_watermark_age_seconds") == 600
    assert store.closed == 1, "each scrape releases its thread's database connection"


def test_an_unreachable_redis_or_database_reads_as_zero_gauges_and_no_counters_with_the_source_marked_down():
    text = scrape(FakeRedis(error=ConnectionError("redis is down")), FakeStore(fail=True, ingested=5))
    parsed = samples(text)
    assert value(parsed, "keepa_exporter_source_up", source="redis") == 0
    assert value(parsed, "keepa_exporter_source_up", source="database") == 0
    assert value(parsed, "keepa_governor_up") == 0
    assert value(parsed, "keepa_deals_stored") == 0
    # a counter at 0 would read as a reset, and its whole total would count again once the source is back
    assert set(helps(text)) == EXPECTED_NAMES - set(UNREAD_WHEN_DOWN)
    left_out = {f"{name}{suffix}" for name in UNREAD_WHEN_DOWN for suffix in ("", "_total", "_created")}
    assert not left_out & {name for name, _ in parsed}


def test_a_garbled_snapshot_counts_as_missing_and_odd_fields_as_zero():
    assert value(samples(scrape(FakeRedis(b"{not json"), FakeStore())), "keepa_governor_up") == 0
    assert value(samples(scrape(FakeRedis(b"[1, 2]"), FakeStore())), "keepa_governor_up") == 0
    odd = {"updated_ms": NOW_MS, "balance": "lots", "pending": {"commit": None, "bogus": 9}, "recharge": [],
           "calls_total": {"deal": {"ok": 1, "418": 5}, "sideways": {"ok": 3}},
           "wait_seconds": {"peek": {"buckets": [[1, 5], [5, 2], ["+Inf", 2]], "sum_s": 1}}}
    parsed = samples(scrape(FakeRedis(json.dumps(odd)), FakeStore()))
    assert value(parsed, "keepa_governor_up") == 1
    assert value(parsed, "keepa_tokens_balance") == 0
    assert value(parsed, "keepa_requests_pending", **{"class": "commit"}) == 0
    assert value(parsed, "keepa_grant_wait_seconds_count", **{"class": "peek"}) == 0, "non-cumulative buckets"
    assert value(parsed, "keepa_calls_total", endpoint="deal", outcome="ok") == 1
    names = {(n, dict(labels).get("endpoint"), dict(labels).get("outcome")) for n, labels in parsed}
    assert ("keepa_calls_total", "deal", "418") not in names, "labels stay bounded"
    assert ("keepa_calls_total", "sideways", "ok") not in names
    assert all_finite(parsed)


def test_help_texts_state_units_and_windows():
    docs = helps(scrape(FakeRedis(json.dumps(governor_snapshot())), FakeStore()))
    units = ("seconds", "tokens", "deals", "requests", "calls", "grants", "entries", "recharges", "1 ", "1 if")
    for name, doc in docs.items():
        assert any(u in doc.lower() for u in units), f"{name}: HELP names no unit: {doc!r}"
    assert "last 5 minutes" in docs["keepa_deals_ingested_per_minute"]
    assert "per minute" in docs["keepa_deals_ingested_per_minute"]
    assert "tokens per minute" in docs["keepa_refill_rate_tokens_per_minute"]
    for name in (n for n in docs if n.endswith("_seconds")):
        assert "seconds" in docs[name].lower(), name


def test_the_registry_without_a_multiprocess_directory_holds_only_the_keepa_collector():
    text = generate_latest(build_registry(FakeRedis(None), FakeStore(), now_ms=lambda: NOW_MS)).decode()
    assert set(helps(text)) == EXPECTED_NAMES
    assert value(samples(text), "keepa_exporter_source_up", source="database") == 1
