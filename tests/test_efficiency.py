"""Operators see efficiency: tokens spent over the last hour (recorded by the governor at each
settle, kept in its durable state and snapshot), tokens per deal ingested, and deals screened out,
in /metrics from the first scrape."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from actors.governor_host import GovernorHost
from actors.ledger import SNAPSHOT_KEY, Ledger, Ops
from governor.config import GovernorConfig
from governor.spend import MINUTE_MS, SpendWindow, spent_since, tokens_per_deal, window_start_ms
from keepa_api.tokens import Envelope
from tests.test_metrics_support import NOW_MS, FakeRedis, FakeStore, governor_snapshot, samples, value
from tests.test_metrics_unit import scrape

HOUR_AGO = window_start_ms(NOW_MS)


def test_the_window_is_this_minute_and_the_59_before():
    minute = NOW_MS // MINUTE_MS * MINUTE_MS
    assert minute - 59 * MINUTE_MS == HOUR_AGO and NOW_MS - HOUR_AGO < 60 * MINUTE_MS


def test_the_spend_window_adds_by_minute_and_forgets_what_left_the_hour():
    window = SpendWindow()
    window.add(NOW_MS - 61 * MINUTE_MS, 100)
    window.add(NOW_MS - 30 * MINUTE_MS, 7)
    window.add(NOW_MS - 30 * MINUTE_MS + 1, 3)
    window.add(NOW_MS, 0)  # a call charged nothing: no entry
    window.add(NOW_MS, 5)
    assert spent_since(window.to_json(), HOUR_AGO) == 15
    assert len(window.to_json()) == 2  # the minute 61 minutes ago was dropped on the next add
    assert SpendWindow.from_json(window.to_json()).by_minute == window.by_minute
    assert SpendWindow.from_json("garbage").by_minute == {} and spent_since(None, 0) == 0


@pytest.mark.parametrize(("spent", "deals", "per_deal"), [(120, 10, 12.0), (0, 0, 0.0), (35, 0, 35.0),
                                                          (0, 4, 0.0)])
def test_tokens_per_deal_is_spent_over_deals_and_an_hour_with_no_deal_counts_as_one(spent, deals, per_deal):
    assert tokens_per_deal(spent, deals) == per_deal


def test_the_exporter_serves_tokens_per_deal_and_screened_out_deals_from_shared_state():
    store = FakeStore(stored=400, ingested=12, recent=3, screened=350)
    parsed = samples(scrape(FakeRedis(json.dumps(governor_snapshot())), store))
    assert HOUR_AGO in store.since_asked  # deals counted over the same hour as the tokens
    assert value(parsed, "keepa_tokens_spent_last_hour") == 42  # 30 + 12; the minute an hour ago is out
    assert value(parsed, "keepa_deals_ingested_last_hour") == 3
    assert value(parsed, "keepa_tokens_per_deal") == 14.0
    assert value(parsed, "keepa_deals_screened_out_total") == 350


def test_the_efficiency_series_exist_at_zero_with_no_snapshot_and_an_empty_database():
    parsed = samples(scrape(FakeRedis(None), FakeStore()))
    for name in ("keepa_tokens_spent_last_hour", "keepa_tokens_per_deal", "keepa_deals_ingested_last_hour",
                 "keepa_deals_screened_out_total"):
        assert value(parsed, name) == 0


def test_with_no_database_tokens_per_deal_and_the_screened_out_counter_are_left_out_not_zero():
    parsed = samples(scrape(FakeRedis(None), None))
    names = {name for name, _ in parsed}
    assert "keepa_tokens_per_deal" not in names and "keepa_deals_screened_out_total" not in names
    assert value(parsed, "keepa_deals_ingested_last_hour") == 0  # a gauge: 0, with the source marked down
    assert value(parsed, "keepa_exporter_source_up", source="database") == 0


def test_the_governor_records_each_settles_tokens_in_its_snapshot_and_keeps_them_across_a_takeover(redis_server):
    from actors.broker import make_broker

    broker = make_broker(redis_server)
    broker.client.flushdb()
    clock = SimpleNamespace(ms=NOW_MS)
    try:
        def host(holder):
            return GovernorHost(Ledger(broker.client, holder=holder), broker, GovernorConfig(),
                                lambda: Envelope(clock.ms, 1_000, 60_000, 100), clock_ms=lambda: clock.ms)
        def handle(governor, kind, body):   # one message, as the governor loop applies a batch
            ops = Ops()
            assert governor.begin(clock.ms)
            governor.apply(kind, body, clock.ms, ops)
            assert governor.finish(clock.ms, ops)

        first = host("a")
        for n, consumed in enumerate((6, 14)):
            handle(first, "request", {"id": f"c{n}", "cls": "commit", "units": 1, "payload": {"asins": ["B000000001"]}})
            envelope = Envelope(clock.ms, 900, 30_000, 100, tokens_consumed=consumed).to_json()
            handle(first, "settle", {"grant_id": f"c{n}", "endpoint": "commit", "outcome": "ok", "envelope": envelope})
            clock.ms += MINUTE_MS
        first.write_snapshot(clock.ms)
        snap = Ledger(broker.client).read_snapshot()
        assert spent_since(snap["tokens_spent_by_minute"], window_start_ms(clock.ms)) == 20
        assert first.ledger.release()
        second = host("b")  # the next leader reads the record from the durable state, not the snapshot
        broker.client.delete(SNAPSHOT_KEY)
        assert second.begin(clock.ms)
        second.write_snapshot(clock.ms)
        snap = Ledger(broker.client).read_snapshot()
        assert spent_since(snap["tokens_spent_by_minute"], window_start_ms(clock.ms)) == 20
    finally:
        broker.client.flushdb()
        broker.close()


def test_status_shows_tokens_per_deal_and_screened_out_deals(redis_server, tmp_path):
    import redis

    from keepa_deals.settings import load_settings
    from keepa_deals.status import collect, render
    from pipeline.commit import DealRecord
    from storage.store import open_store

    settings = load_settings({"REDIS_URL": redis_server, "DATABASE_URL": f"sqlite:///{tmp_path}/deals.db"})
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    store = open_store(settings.database_url)
    try:
        Ledger(client).write_snapshot({**governor_snapshot(), "tokens_spent_by_minute": [
            [HOUR_AGO - MINUTE_MS, 500], [HOUR_AGO, 40], [NOW_MS // MINUTE_MS * MINUTE_MS, 20]]})
        store.upsert_deals([("B000000001", NOW_MS, None), ("B000000002", NOW_MS, "screened: drop 1.0% below"),
                            ("B000000003", NOW_MS, "screened: drop 2.0% below")], NOW_MS - 10 * MINUTE_MS)
        for asin, committed_ms in (("B000000001", NOW_MS - MINUTE_MS), ("B000000009", HOUR_AGO - 1)):
            store.store_deal(DealRecord(asin=asin, title="Kettle", price_new=1999, avg90_new=2999, drop_percent=33.3,
                                        sales_rank=1200, offers=4, deal_time_ms=NOW_MS, committed_ms=committed_ms))
        doc = collect(settings, now_ms=NOW_MS, store=store)
        assert (doc["tokens_spent_last_hour"], doc["deals_ingested_last_hour"], doc["tokens_per_deal"]) == (60, 1, 60)
        assert doc["deals_screened_out"] == 2
        text = render(doc)
        assert "2 screened out" in text and "tokens per deal: 60 over the last hour (60 tokens spent)" in text
    finally:
        store.close()
        client.flushdb()
