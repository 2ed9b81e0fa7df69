"""The scheduler's tick, the production path: claims left by a crash come back and are peeked; claims
whose peek is still on its way (its ticket open, :mod:`actors.peek_tickets`) stay; a ticket left
untouched too long is dropped, and the late grant for it makes no Keepa call.

Real redis-server (a database of its own), the real Dramatiq broker (read through its public
consumer) and SQLite; the embedded Keepa server stands in for Keepa, behind a call counter. Time is
injected: the runtime's clock and the tick's ``now_ms`` are set by each test.
"""

from __future__ import annotations

import logging
import threading
import time

import dramatiq
import pytest
import redis

from actors import app
from actors.broker import make_broker
from actors.governor_host import GovernorHost
from actors.ledger import Ledger, Ops
from actors.peek_tickets import TICKET_TIMEOUT_MINUTES, PeekTickets
from actors.processes import CLAIM_TIMEOUT_MINUTES, scheduler_tick
from actors.scan import read_pages
from actors.steps import Steps
from governor.config import GovernorConfig
from keepa_api.catalogue import Catalogue
from keepa_api.client import KeepaClient
from keepa_api.server import FakeKeepa
from keepa_api.tokens import Envelope, TokenBucket
from keepa_base.errors import NotEnoughTokens
from pipeline import batching
from pipeline.verdict import ViabilityRule
from storage.store import open_store

NOW = 1_700_000_000_000
MINUTE_MS = 60_000


class CountingClient:
    """The Keepa client, counting the /product calls made (each a list of ASINs)."""

    def __init__(self, client):
        self.client, self.peeks = client, []

    def peek(self, asins, **options):
        self.peeks.append(list(asins))
        return self.client.peek(asins, **options)

    def commit(self, asins, **options):
        return self.client.commit(asins, **options)

    def deals(self, selection, page):
        return self.client.deals(selection, page)


class Busy:
    """A Keepa client whose /product answers 429 (not enough tokens), the refill due in ``refill_in_ms``."""

    def __init__(self, refill_in_ms: int):
        self.refill_in_ms = refill_in_ms

    def peek(self, asins, **options):
        envelope = Envelope(timestamp_ms=NOW, tokens_left=-1, refill_in_ms=self.refill_in_ms, refill_rate=20)
        raise NotEnoughTokens("Keepa /product: HTTP 429", retry_after_ms=self.refill_in_ms, envelope=envelope)


class Runtime:
    """What the tick and the steps use of :class:`actors.app.Runtime`, with a clock the test sets."""

    def __init__(self, broker, store, client):
        self.broker, self.redis, self.store, self.client = broker, broker.client, store, client
        self.rule, self.minute_ms = ViabilityRule(), MINUTE_MS
        self.screen_query, self.screen_deals = True, True
        self.now = NOW
        self.steps = Steps(self)

    def clock_ms(self):
        return self.now

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
        yield Runtime(broker, store, CountingClient(client)), keepa.service.catalogue
    finally:
        store.close()
        client.close()
        keepa.stop()
        broker.client.flushdb()
        broker.close()


def governor_messages(broker, kind: str = "request") -> list[dict]:
    """The ``kind`` messages waiting on the governor's queue, taken off it (Dramatiq's public consumer)."""
    consumer = broker.consume("governor", prefetch=1_000, timeout=50)
    bodies = []
    try:
        for _ in range(10_000):
            proxy = next(consumer)
            if proxy is None:
                break
            consumer.ack(proxy)
            if proxy.args[0] == kind:
                bodies.append(proxy.args[1])
    finally:
        consumer.close()
    return bodies


def peek_requests(broker) -> list[dict]:
    return [body for body in governor_messages(broker) if body["cls"] == "peek"]


def state_of(store, asins) -> dict[str, str]:
    rows = store.db.execute_sql(
        f"SELECT asin, state FROM light_deal WHERE asin IN ({','.join('?' * len(asins))})", list(asins))
    return dict(rows.fetchall())


def new_deals(rt, catalogue, n) -> list[str]:
    asins = [catalogue.asin(i) for i in range(n)]
    for asin in asins:
        rt.store.upsert_deal(asin, NOW - 90 * MINUTE_MS, NOW - 90 * MINUTE_MS)
    return asins


def test_a_candidate_left_peeking_by_a_crash_comes_back_at_the_tick_and_is_peeked(runtime):
    rt, catalogue = runtime
    new_deals(rt, catalogue, 4)
    rt.now = claimed_at = NOW - (CLAIM_TIMEOUT_MINUTES + 1) * MINUTE_MS
    crashed = rt.store.take_candidates(3, claimed_at)   # a worker claimed these, then died before asking
    assert rt.steps.top_up() == 1                        # this one's peek was asked for: it waits at the governor
    ((waiting,),) = [r["payload"]["asins"] for r in peek_requests(rt.broker)]

    rt.now = NOW
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
    (asin,) = new_deals(rt, catalogue, 1)
    rt.store.take_candidates(1, NOW - (CLAIM_TIMEOUT_MINUTES - 1) * MINUTE_MS)
    assert scheduler_tick(rt, NOW)
    assert peek_requests(rt.broker) == [] and state_of(rt.store, [asin]) == {asin: "peeking"}


def test_a_claim_whose_request_still_waits_for_the_governor_is_not_returned(runtime):
    """The governor is down: the request sits on its queue far past the claim timeout. Its ticket,
    opened before the ask, keeps the claim with it; nothing is claimed or asked twice."""
    rt, catalogue = runtime
    asins = new_deals(rt, catalogue, 3)
    rt.now = asked_at = NOW - (TICKET_TIMEOUT_MINUTES - 1) * MINUTE_MS
    assert rt.steps.top_up() == 3
    first = peek_requests(rt.broker)
    assert sorted(a for r in first for a in r["payload"]["asins"]) == sorted(asins)

    rt.now = NOW
    assert NOW - asked_at > CLAIM_TIMEOUT_MINUTES * MINUTE_MS
    assert scheduler_tick(rt, NOW)
    assert peek_requests(rt.broker) == []                              # nothing asked twice
    assert set(state_of(rt.store, asins).values()) == {"peeking"}       # every claim still its request's
    assert PeekTickets(rt.redis).sweep(NOW, TICKET_TIMEOUT_MINUTES * MINUTE_MS).open_tickets == 3
    assert int(rt.redis.get("keepa-deals:peek:outstanding")) == 3       # the window counts them


def test_a_late_grant_for_a_claim_returned_to_line_makes_no_keepa_call(runtime, caplog):
    """The governor stays down past the ticket's timeout: the ticket is dropped (saying so), the claim
    goes back in line and is asked for afresh. When the old request's grant finally runs, it finds its
    ticket gone and calls nothing; the new one peeks, once."""
    rt, catalogue = runtime
    (asin,) = new_deals(rt, catalogue, 1)
    rt.now = NOW - (TICKET_TIMEOUT_MINUTES + 1) * MINUTE_MS
    assert rt.steps.top_up() == 1
    (old,) = peek_requests(rt.broker)

    rt.now = NOW
    with caplog.at_level(logging.WARNING, logger="actors.peek_tickets"):
        assert scheduler_tick(rt, NOW)
    assert f"peek ticket {old['payload']['ticket']} for [\"{asin}\"] dropped" in caplog.text
    (new,) = peek_requests(rt.broker)                       # returned to line, claimed again, asked again
    assert new["payload"]["asins"] == [asin] and new["payload"]["ticket"] != old["payload"]["ticket"]

    rt.steps.peek(old["id"], old["payload"])                 # the late grant of the old request
    assert rt.client.peeks == [] and state_of(rt.store, [asin]) == {asin: "peeking"}
    (released,) = governor_messages(rt.broker, "settle")
    assert released["grant_id"] == old["id"] and released["envelope"] is None  # its tokens go back

    rt.steps.peek(new["id"], new["payload"])
    assert rt.client.peeks == [[asin]] and state_of(rt.store, [asin])[asin] in ("viable", "rejected")


def test_a_delayed_re_ask_reaches_the_governor_through_the_worker_queue_actor(runtime):
    """A peek answered 429 is asked again after Keepa's refill: the delayed message waits on the peek
    queue (a real Dramatiq worker consumes it), and its actor sends the request to the governor
    undelayed. Nothing delayed is ever sent to the governor's queue."""
    rt, catalogue = runtime
    new_deals(rt, catalogue, 1)
    sent = []
    enqueue = rt.broker.enqueue

    def recording(message, *, delay=None):
        sent.append((message.queue_name, message.actor_name, delay))
        return enqueue(message, delay=delay)

    rt.broker.enqueue = recording
    assert rt.steps.top_up() == 1
    (request,) = peek_requests(rt.broker)

    rt.client = Busy(refill_in_ms=0)
    app.RUNTIME = rt
    app._declare_actors(rt.broker)
    worker = dramatiq.Worker(rt.broker, queues={"peek"}, worker_threads=1, worker_timeout=20)
    try:
        rt.steps.peek(request["id"], request["payload"])   # the grant: 429, asked again after the refill
        assert ("peek", "keepa_ask_again", 100) in sent
        worker.start()
        again = []
        deadline = time.monotonic() + 10
        while not again and time.monotonic() < deadline:
            again = peek_requests(rt.broker)
            threading.Event().wait(0.05)
    finally:
        worker.stop()
        app.reset_for_tests()
    assert [r["id"] for r in again] == [request["id"].rsplit(":", 1)[0] + ":1"]
    assert again[0]["payload"]["ticket"] == request["payload"]["ticket"]
    assert all(delay is None for queue, _, delay in sent if queue == "governor")


def test_a_peek_the_governor_holds_longer_than_the_ticket_timeout_keeps_its_ticket_and_claim(runtime, caplog):
    """On a slow plan a peek may wait for tokens longer than the ticket timeout. The governor holds
    its request (pending, written by the governor itself), so the ticket is alive: it is not dropped,
    its claim is not returned, nothing is asked twice."""
    rt, catalogue = runtime
    (asin,) = new_deals(rt, catalogue, 1)
    rt.now = asked_at = NOW - (TICKET_TIMEOUT_MINUTES + 5) * MINUTE_MS
    assert rt.steps.top_up() == 1
    (request,) = peek_requests(rt.broker)
    empty = TokenBucket(5, start_tokens=0, start_ms=asked_at)   # nothing to grant with: the request waits
    host = GovernorHost(Ledger(rt.redis, holder="gov"), rt.broker, GovernorConfig(recharge="off"),
                        lambda: empty.envelope(asked_at), clock_ms=lambda: asked_at)
    assert host.begin(asked_at)
    ops = Ops()
    host.apply("request", request, asked_at, ops)
    assert host.finish(asked_at, ops)
    assert request["id"] in {r.id for r in host.gov.queues["peek"]}, "the governor holds it, ungranted"

    rt.now = NOW
    with caplog.at_level(logging.WARNING, logger="actors.peek_tickets"):
        assert scheduler_tick(rt, NOW)
    assert "dropped" not in caplog.text
    assert peek_requests(rt.broker) == []                                  # nothing asked twice
    assert state_of(rt.store, [asin]) == {asin: "peeking"}                 # the claim is still its request's
    assert PeekTickets(rt.redis).touch(request["payload"]["ticket"], NOW)  # and its grant will call


def test_a_ticket_whose_ask_never_left_is_dropped_after_the_timeout_and_its_claim_peeked_again(runtime, caplog):
    """Redis goes away between opening a ticket and sending its request (a restart): the ticket names
    a claim no request will ever answer. After ``TICKET_TIMEOUT_MINUTES`` untouched the sweep drops it
    and the claim is asked for afresh. On a test stack's half-second Keepa minute that is 30 s."""
    rt, catalogue = runtime
    rt.minute_ms = 500
    (asin,) = new_deals(rt, catalogue, 1)
    enqueue = rt.broker.enqueue

    def redis_gone(message, *, delay=None):
        raise redis.ConnectionError("Connection refused")

    rt.broker.enqueue = redis_gone
    with pytest.raises(redis.ConnectionError):
        rt.steps.top_up()
    rt.broker.enqueue = enqueue
    (orphan,) = rt.redis.hkeys("keepa-deals:peek:tickets")
    timeout_ms = TICKET_TIMEOUT_MINUTES * rt.minute_ms

    rt.now = NOW + timeout_ms - 1_000
    assert scheduler_tick(rt, rt.now)
    assert peek_requests(rt.broker) == [] and state_of(rt.store, [asin]) == {asin: "peeking"}  # not yet

    rt.now = NOW + timeout_ms + 1
    with caplog.at_level(logging.WARNING, logger="actors.peek_tickets"):
        assert scheduler_tick(rt, rt.now)
    assert f"peek ticket {orphan.decode()} for [\"{asin}\"] dropped" in caplog.text
    (request,) = peek_requests(rt.broker)                       # back in line, claimed again, asked
    assert request["payload"]["asins"] == [asin] and request["payload"]["ticket"] != orphan.decode()


def test_a_peek_waiting_to_be_asked_again_longer_than_the_ticket_timeout_keeps_its_ticket(runtime, caplog):
    """A peek answered 429 waits for Keepa's refill in a delayed re-ask, which the governor does not
    hold. Its ticket is touched at the re-ask's due time, so a wait longer than the ticket timeout
    (30 s on a half-second Keepa minute; here 45 s) neither drops it nor returns its claim, and the
    re-ask, when due, finds it open and asks again."""
    rt, catalogue = runtime
    rt.minute_ms = 500
    (asin,) = new_deals(rt, catalogue, 1)
    delayed = []
    enqueue = rt.broker.enqueue

    def recording(message, *, delay=None):
        if delay is not None:
            delayed.append((message, delay))
            return message
        return enqueue(message, delay=delay)

    rt.broker.enqueue = recording
    assert rt.steps.top_up() == 1
    (request,) = peek_requests(rt.broker)

    rt.client = Busy(refill_in_ms=45_000)
    rt.steps.peek(request["id"], request["payload"])       # the grant: 429, asked again after the refill
    ((message, delay),) = delayed
    assert delay > TICKET_TIMEOUT_MINUTES * rt.minute_ms

    rt.now = NOW + delay - 1
    with caplog.at_level(logging.WARNING, logger="actors.peek_tickets"):
        assert scheduler_tick(rt, rt.now)
    assert "dropped" not in caplog.text
    assert peek_requests(rt.broker) == [] and state_of(rt.store, [asin]) == {asin: "peeking"}

    rt.now = NOW + delay                                   # the re-ask comes due
    rt.steps.ask_again(message.args[0])
    (again,) = peek_requests(rt.broker)
    assert again["id"] == request["id"].rsplit(":", 1)[0] + ":1"
    assert again["payload"]["ticket"] == request["payload"]["ticket"]
