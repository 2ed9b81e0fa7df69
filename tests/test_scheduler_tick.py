"""The scheduler's tick, the production path: claims left by a crash come back and are peeked.

Real redis-server (a database of its own), the real Dramatiq broker and SQLite; the embedded Keepa
server stands in for Keepa. Time is injected: the tick gets ``now_ms``, the claims are made earlier.
"""

from __future__ import annotations

import json

import pytest
from dramatiq import Message

from actors.broker import make_broker
from actors.ledger import PREFIX, Ledger
from actors.processes import CLAIM_TIMEOUT_MINUTES, scheduler_tick
from actors.steps import Steps, read_pages
from keepa_api.catalogue import Catalogue
from keepa_api.client import KeepaClient
from keepa_api.server import FakeKeepa
from pipeline import batching
from pipeline.verdict import ViabilityRule
from storage.store import open_store

NOW = 1_700_000_000_000
MINUTE_MS = 60_000


class Runtime:
    """What the tick and the steps use of :class:`actors.app.Runtime`, with a fixed clock."""

    def __init__(self, broker, store, client):
        self.broker, self.redis, self.store, self.client = broker, broker.client, store, client
        self.rule, self.minute_ms = ViabilityRule(), MINUTE_MS
        self.screen_query, self.screen_deals = True, True
        self.steps = Steps(self)

    def clock_ms(self):
        return NOW

    def peek_batch(self):  # the 20/min plan: one ASIN a peek
        return batching.peek_batch(20)

    def commit_batch(self):
        return batching.commit_batch(20)

    def scan_pages(self):
        return 1

    def read_pages(self, selection, pages):
        return read_pages(self.client, selection, pages)


@pytest.fixture
def runtime(redis_server, tmp_path):
    broker = make_broker(redis_server.rsplit("/", 1)[0] + "/10")
    broker.client.flushdb()
    keepa = FakeKeepa(refill_per_minute=100_000, catalogue=Catalogue(3, viable_fraction=0.5, screen_pass_fraction=1.0))
    client = KeepaClient("test-key", base_url=keepa.start(), timeout_s=5)
    store = open_store(f"sqlite:///{tmp_path}/deals.db")
    try:
        yield Runtime(broker, store, client), keepa.service.catalogue
    finally:
        store.close()
        client.close()
        keepa.stop()
        broker.client.flushdb()
        broker.close()


def peek_requests(broker) -> list[dict]:
    """The peek requests waiting on the governor's queue."""
    bodies = []
    for raw in broker.client.hvals(f"{broker.namespace}:governor.msgs"):
        kind, body = Message.decode(raw).args[:2]
        if kind == "request" and body["cls"] == "peek":
            bodies.append(body)
    return bodies


def state_of(store, asins) -> dict[str, str]:
    rows = store.db.execute_sql(
        f"SELECT asin, state FROM light_deal WHERE asin IN ({','.join('?' * len(asins))})", list(asins))
    return dict(rows.fetchall())


def test_a_candidate_left_peeking_by_a_crash_comes_back_at_the_tick_and_is_peeked(runtime):
    rt, catalogue = runtime
    asins = [catalogue.asin(i) for i in range(4)]
    for asin in asins:
        rt.store.upsert_deal(asin, NOW - 20 * MINUTE_MS, NOW - 20 * MINUTE_MS)
    claimed_at = NOW - (CLAIM_TIMEOUT_MINUTES + 1) * MINUTE_MS
    crashed = rt.store.take_candidates(3, claimed_at)   # a worker claimed these, then died before asking
    (waiting,) = rt.store.take_candidates(1, claimed_at)  # this one's peek waits at the governor
    rt.redis.hset(PREFIX + "pending", f"peek:{waiting}x1:0", json.dumps(
        {"id": f"peek:{waiting}x1:0", "cls": "peek", "units": 1, "created_ms": claimed_at, "seq": 1,
         "payload": {"asins": [waiting]}}))
    Ledger(rt.redis).write_snapshot({"updated_ms": NOW, "refill_rate": 20, "balance": 100, "cap": 600_000,
                                     "pending": {"upsert": 0, "commit": 0, "peek": 1},
                                     "in_flight": {"upsert": 0, "commit": 0, "peek": 0}})

    assert scheduler_tick(rt, NOW)

    asked = peek_requests(rt.broker)
    assert sorted(a for r in asked for a in r["payload"]["asins"]) == sorted(crashed)  # back, claimed, asked
    assert state_of(rt.store, [waiting]) == {waiting: "peeking"}  # its own peek is still on its way
    for request in asked:                                         # the governor grants them; a worker runs them
        rt.steps.peek(request["id"], request["payload"])
    assert set(state_of(rt.store, crashed).values()) <= {"viable", "rejected"}
    assert not scheduler_tick(rt, NOW + 1)                        # one tick a Keepa minute


def test_a_claim_younger_than_the_timeout_stays_with_its_worker(runtime):
    rt, catalogue = runtime
    asin = catalogue.asin(0)
    rt.store.upsert_deal(asin, NOW - MINUTE_MS, NOW - MINUTE_MS)
    rt.store.take_candidates(1, NOW - (CLAIM_TIMEOUT_MINUTES - 1) * MINUTE_MS)
    assert scheduler_tick(rt, NOW)
    assert peek_requests(rt.broker) == [] and state_of(rt.store, [asin]) == {asin: "peeking"}
