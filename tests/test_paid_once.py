"""Each grant is paid for at most once: a copy of a grant (Dramatiq's redelivery or retry, the
governor's resend) stores the answer already bought, or does nothing, or releases the grant when its
first call's outcome is unknown; it never calls Keepa again under the same grant id.

Real Redis and SQLite; the embedded Keepa server stands in for Keepa, a list for the broker."""

from __future__ import annotations

import json

import pytest

from actors.grant_claims import ATTEMPTS_KEY, CLAIM_PREFIX, calls_repeated
from actors.peek_tickets import OUTSTANDING_KEY
from actors.product_answer import ProductAnswer
from actors.steps import Steps
from keepa_api.catalogue import Catalogue
from keepa_api.client import KeepaClient
from keepa_api.server import FakeKeepa
from keepa_base.errors import DatabaseUnavailable
from pipeline import driver
from pipeline.driver import MAX_CALL_ATTEMPTS
from tests import test_steps
from tests.test_steps import NOW, Runtime, asked_peek, orphan_claim

redis_db, store = test_steps.redis_db, test_steps.store  # the same fixtures: a Redis database, a SQLite store


class CountingClient:
    def __init__(self, client):
        self.client, self.calls = client, []

    def peek(self, asins, **options):
        self.calls.append(("peek", tuple(asins)))
        return self.client.peek(asins, **options)

    def commit(self, asins, **options):
        self.calls.append(("commit", tuple(asins)))
        return self.client.commit(asins, **options)


@pytest.fixture
def keepa():
    server = FakeKeepa(refill_per_minute=100_000, catalogue=Catalogue(3, viable_fraction=1.0, screen_pass_fraction=1.0))
    client = KeepaClient("test-key", base_url=server.start(), timeout_s=5)
    yield server.service.catalogue, CountingClient(client)
    client.close()
    server.stop()


def failing_once(store, method):
    """The store, with ``method`` failing once (the database went away after the Keepa call)."""
    left = {"n": 1}

    def broken(*args, **kwargs):
        if left["n"]:
            left["n"] -= 1
            raise DatabaseUnavailable("the database went away")
        return getattr(type(store), method)(store, *args, **kwargs)

    setattr(store, method, broken)
    return store


def candidates(store, catalogue, n):
    asins = [catalogue.asin(i) for i in range(n)]
    for asin in asins:
        store.upsert_deal(asin, NOW, NOW)
    return store.take_candidates(n, NOW)


def claim_state(redis_client, grant_id):
    return json.loads(redis_client.get(CLAIM_PREFIX + grant_id))["state"]


def test_a_peek_whose_database_write_failed_is_stored_on_retry_without_calling_keepa_again(redis_db, store, keepa):
    catalogue, client = keepa
    asins = candidates(store, catalogue, 3)
    payload = asked_peek(redis_db, asins)
    rt = Runtime(redis_db, failing_once(store, "record_verdicts"), client, rate=1_000)
    steps = Steps(rt)
    redis_db.set(OUTSTANDING_KEY, 1)
    with pytest.raises(DatabaseUnavailable):
        steps.peek("peek:g:0", payload)
    assert rt.broker.settles() == [] and claim_state(redis_db, "peek:g:0") == "answered"
    steps.peek("peek:g:0", payload)  # Dramatiq retries the message in the same process
    assert client.calls == [("peek", tuple(asins))]
    assert store.deals_by_state()["viable"] == 3
    (settle,) = rt.broker.settles()
    assert settle["outcome"] == "ok" and settle["envelope"]["tokensConsumed"] == 3  # the one call's charge
    assert claim_state(redis_db, "peek:g:0") == "done" and calls_repeated(redis_db) == 0


def test_a_commit_whose_database_write_failed_is_stored_on_retry_without_calling_keepa_again(redis_db, store,
                                                                                              keepa):
    catalogue, client = keepa
    asins = candidates(store, catalogue, 2)
    rt = Runtime(redis_db, failing_once(store, "store_deal"), client, rate=1_000)
    with pytest.raises(DatabaseUnavailable):
        Steps(rt).commit("commit:g:0", {"asins": asins})
    Steps(rt).commit("commit:g:0", {"asins": asins})  # retried by another worker process: a new Steps
    assert client.calls == [("commit", tuple(asins))]
    assert store.deals_ingested() == 2 and len(rt.broker.settles()) == 1


def test_a_copy_of_a_grant_that_a_live_worker_is_running_makes_no_call(redis_db, store, keepa):
    catalogue, client = keepa
    asins = candidates(store, catalogue, 1)
    payload = asked_peek(redis_db, asins)
    redis_db.set(CLAIM_PREFIX + "peek:g:0", json.dumps({"state": "calling", "owner": "live/1", "since_ms": NOW}))
    redis_db.zadd(ATTEMPTS_KEY, {"live/1": NOW - 1_000})  # the attempt beat a second ago
    rt = Runtime(redis_db, store, client, rate=1_000)
    Steps(rt).peek("peek:g:0", payload)
    assert client.calls == [] and rt.broker.sent == [] and claim_state(redis_db, "peek:g:0") == "calling"


def test_a_grant_whose_worker_died_mid_call_is_released_and_asked_for_again_never_repeated(redis_db, store, keepa):
    catalogue, client = keepa
    asins = candidates(store, catalogue, 2)
    payload = asked_peek(redis_db, asins)
    orphan_claim(redis_db, "peek:g:0")
    redis_db.zadd(ATTEMPTS_KEY, {"dead-process/attempt": NOW - 60_000})  # silent for a minute
    rt = Runtime(redis_db, store, client, rate=1_000)
    Steps(rt).peek("peek:g:0", payload)
    assert client.calls == []
    (settle,) = rt.broker.settles()
    assert settle["envelope"] is None and settle["grant_id"] == "peek:g:0"  # released: may have been charged
    (again,) = rt.broker.requests("peek")
    assert again["id"] == "peek:g:1" and again["payload"]["asins"] == asins  # a new grant, not this one
    assert claim_state(redis_db, "peek:g:0") == "released"
    Steps(rt).peek("peek:g:0", payload)  # yet another copy: nothing at all
    assert client.calls == [] and len(rt.broker.sent) == 2


def test_an_answer_paid_for_by_a_worker_that_died_is_stored_without_a_call(redis_db, store, keepa):
    catalogue, client = keepa
    asins = candidates(store, catalogue, 1)
    kept = ProductAnswer.from_batch(client.client.commit(asins, history=False)).to_json()
    orphan_claim(redis_db, "commit:g:0", answer=kept)  # the answer as the dead worker kept it
    rt = Runtime(redis_db, store, client, rate=1_000)
    Steps(rt).commit("commit:g:0", {"asins": asins})
    assert client.calls == [] and store.deals_ingested() == 1
    (settle,) = rt.broker.settles()
    assert settle["envelope"] == kept["envelope"]


def test_a_settled_grant_delivered_again_does_nothing(redis_db, store, keepa):
    catalogue, client = keepa
    asins = candidates(store, catalogue, 1)
    payload = asked_peek(redis_db, asins)
    rt = Runtime(redis_db, store, client, rate=1_000)
    redis_db.set(OUTSTANDING_KEY, 1)
    Steps(rt).peek("peek:g:0", payload)
    rt.broker.sent.clear()
    Steps(rt).peek("peek:g:0", payload)
    assert len(client.calls) == 1 and rt.broker.sent == [] and int(redis_db.get(OUTSTANDING_KEY)) == 0


def test_a_grant_released_again_and_again_is_set_aside_at_the_call_limit_not_asked_for_for_ever(redis_db, store,
                                                                                                  keepa):
    catalogue, client = keepa
    asins = candidates(store, catalogue, 2)
    rt = Runtime(redis_db, store, client, rate=1_000)
    redis_db.set(OUTSTANDING_KEY, 1)
    grant, payload = "peek:g:0", asked_peek(redis_db, asins)
    for released in range(1, MAX_CALL_ATTEMPTS + 1):  # each grant's worker dies mid-call; a copy releases it
        orphan_claim(redis_db, grant)
        redis_db.zadd(ATTEMPTS_KEY, {"dead-process/attempt": NOW - 60_000})
        rt.broker.sent.clear()
        Steps(rt).peek(grant, payload)
        asked = rt.broker.requests("peek")
        if released < MAX_CALL_ATTEMPTS:
            (again,) = asked
            assert again["payload"]["failures"] == released
            grant, payload = again["id"], again["payload"]
        else:
            assert asked == []  # the dead end: set aside, visible, no more asks
    assert client.calls == []
    assert store.products_set_aside() == 2 and int(redis_db.get(OUTSTANDING_KEY)) == 0
    assert all(f"failed {MAX_CALL_ATTEMPTS} calls in a row" in item["reason"] for item in store.set_aside_products())


def test_429s_do_not_use_up_a_calls_failure_budget():
    assert driver.failures_after("429", 7) == 7
    assert driver.failures_after("5xx", 7) == driver.failures_after("timeout", 7) == 8
    assert driver.after_failure("5xx", MAX_CALL_ATTEMPTS - 2).action == driver.RETRY
    assert driver.after_failure("5xx", MAX_CALL_ATTEMPTS - 1).action == driver.SET_ASIDE


def test_a_peek_redelivered_after_its_worker_died_before_closing_the_ticket_closes_it_and_frees_the_slot(
        redis_db, store, keepa):
    """The worker stored the verdicts, settled and marked the claim done, then died before closing the
    ticket: Dramatiq delivers the grant again. That copy calls nothing and closes the ticket, so the
    peek window gets its slot back now, not when the scheduler drops the ticket an hour later."""
    catalogue, client = keepa
    asins = candidates(store, catalogue, 2)
    payload = asked_peek(redis_db, asins)
    rt = Runtime(redis_db, store, client, rate=1_000)
    redis_db.set(OUTSTANDING_KEY, 1)
    first = Steps(rt)
    first.top_up = lambda: 0                         # nothing else to peek: the window holds this one only
    first.tickets.close = lambda ticket: (_ for _ in ()).throw(SystemExit("the worker dies here"))
    with pytest.raises(SystemExit):
        first.peek("peek:g:0", payload)
    assert claim_state(redis_db, "peek:g:0") == "done" and int(redis_db.get(OUTSTANDING_KEY)) == 1

    again = Steps(rt)
    again.top_up = lambda: 0
    again.peek("peek:g:0", payload)                  # the redelivered grant
    assert client.calls == [("peek", tuple(asins))]  # one call, by the first copy
    assert int(redis_db.get(OUTSTANDING_KEY)) == 0
    assert not again.tickets.touch(payload["ticket"], NOW)   # closed
    again.peek("peek:g:0", payload)                  # a third copy gives nothing back twice
    assert int(redis_db.get(OUTSTANDING_KEY)) == 0
