"""A bad product is set aside, not re-bought: /product answers are decoded product by product, a
malformed product is asked for again alone at most twice, then set aside where an operator sees it
(status, metrics) and can replay it.

Real Redis and SQLite; the embedded Keepa server (with its malformed-product fault) over HTTP."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from actors.peek_tickets import OUTSTANDING_KEY, PeekTickets
from actors.product_calls import MAX_CALL_ATTEMPTS, MAX_PRODUCT_FAILURES
from actors.steps import Steps
from keepa_api.catalogue import Catalogue
from keepa_api.client import KeepaClient
from keepa_api.records import decode_products_each
from keepa_api.server import FakeKeepa
from keepa_base.errors import ConfigError, MalformedResponse
from keepa_deals import set_aside, status
from tests import test_steps
from tests.test_steps import NOW, Runtime, asked_peek

redis_db, store = test_steps.redis_db, test_steps.store  # the same fixtures: a Redis database, a SQLite store


@pytest.fixture
def keepa():
    server = FakeKeepa(refill_per_minute=100_000, catalogue=Catalogue(3, viable_fraction=1.0, screen_pass_fraction=1.0))
    server.set_faults(malformed_product_rate=0.2)
    client = KeepaClient("test-key", base_url=server.start(), timeout_s=5)
    yield server.service, client
    client.close()
    server.stop()


def good_and_bad(service, n_good, n_bad):
    asins = [service.catalogue.asin(i) for i in range(200)]
    good = [a for a in asins if not service.malformed_product(a)][:n_good]
    bad = [a for a in asins if service.malformed_product(a)][:n_bad]
    return good, bad


def test_the_fault_spoils_the_same_products_every_time_inside_answers_that_are_otherwise_good(keepa):
    service, client = keepa
    asins = [service.catalogue.asin(i) for i in range(100)]
    first, second = client.peek(asins), client.peek(asins)
    spoiled = {asin for asin, _ in first.failed}
    assert spoiled == {asin for asin, _ in second.failed} == {a for a in asins if service.malformed_product(a)}
    assert 5 <= len(spoiled) <= 40  # about a fifth
    assert {p.asin for p in first.products} == set(asins) - spoiled and first.envelope.tokens_consumed == 100
    assert all("stats.current must be an integer array" in reason for _, reason in first.failed)


def test_decoding_product_by_product_keeps_the_good_ones_and_names_each_bad_one():
    good = {"asin": "B000000001", "title": "Kettle"}
    products, failed = decode_products_each({"products": [good, {"asin": "B000000002", "csv": 7}, 5, good]})
    assert [p.asin for p in products] == ["B000000001", "B000000001"]
    assert failed == (("B000000002", "products[1].csv must be an array of series or null, got 7"),
                      (None, "products[2] must be an object, got 5"))
    with pytest.raises(MalformedResponse, match="products must be an array"):
        decode_products_each({"products": "none"})


def test_a_malformed_product_spoils_only_itself_and_is_asked_for_alone(redis_db, store, keepa):
    service, client = keepa
    good, (bad,) = good_and_bad(service, 4, 1)
    for asin in [*good, bad]:
        store.upsert_deal(asin, NOW, NOW)
    claimed = store.take_candidates(5, NOW)
    rt = Runtime(redis_db, store, client, rate=1_000)
    redis_db.set(OUTSTANDING_KEY, 1)
    Steps(rt).peek("peek:g:0", asked_peek(redis_db, claimed))
    assert store.deals_by_state() == {"new": 0, "peeking": 1, "viable": 4, "rejected": 0, "committed": 0,
                                      "screened": 0}
    (alone,) = rt.broker.requests("peek")
    ticket = f"{bad}x1.m{hashlib.sha1(b'peek:g:0').hexdigest()[:8]}"  # its own, named after the grant
    assert alone["id"] == f"peek:{ticket}:0" and alone["payload"] == {"asins": [bad], "ticket": ticket}
    assert PeekTickets(redis_db).sweep(NOW, 60_000).asins == {bad}
    assert int(redis_db.get(OUTSTANDING_KEY)) == 1  # the batch's slot given back, one taken by the single peek
    (settle,) = rt.broker.settles()
    assert settle["outcome"] == "ok" and settle["envelope"]["tokensConsumed"] == 5


def test_a_product_malformed_three_times_is_set_aside_after_two_calls_alone(redis_db, store, keepa):
    service, client = keepa
    good, (bad,) = good_and_bad(service, 2, 1)
    for asin in [*good, bad]:
        store.upsert_deal(asin, NOW, NOW)
    rt = Runtime(redis_db, store, client, rate=1_000)
    steps = Steps(rt)
    request = {"id": "peek:g:0", "payload": asked_peek(redis_db, store.take_candidates(3, NOW))}
    for _ in range(MAX_PRODUCT_FAILURES + 5):  # the governor grants each ask; a worker runs it
        rt.broker.sent.clear()
        steps.peek(request["id"], request["payload"])
        request = next(iter(rt.broker.requests("peek")), None)
        if request is None:
            break
    else:
        pytest.fail(f"still asking after {MAX_PRODUCT_FAILURES + 5} peeks: no limit")
    assert service.product_calls[bad] == MAX_PRODUCT_FAILURES == 3
    assert all(service.product_calls[a] == 1 for a in good)
    assert store.products_set_aside() == 1
    (item,) = store.set_aside_products()
    assert item["asin"] == bad and item["stage"] == "peek" and "stats.current" in item["reason"]
    assert store.deals_by_state()["rejected"] == 1 and store.deals_by_state()["peeking"] == 0


def test_an_answer_unreadable_as_a_whole_counts_against_each_asin_and_each_goes_on_alone(redis_db, store, keepa):
    service, client = keepa
    good, _ = good_and_bad(service, 2, 0)

    class Garbled:  # paid for (the envelope says so) but not a /product answer at all
        def commit(self, asins, **options):
            envelope = client.commit(asins, **options).envelope
            raise MalformedResponse("Keepa /product: products must be an array, got 'none'", status=200,
                                    envelope=envelope)

    rt = Runtime(redis_db, store, Garbled(), rate=1_000)
    Steps(rt).commit("commit:g:0", {"asins": good})
    tag = "m" + hashlib.sha1(b"commit:g:0").hexdigest()[:8]   # named after the grant that found the fault
    assert [r["id"] for r in rt.broker.requests("commit")] == [f"commit:{a}:{tag}" for a in good]
    (settle,) = rt.broker.settles()
    assert settle["outcome"] == "malformed" and settle["envelope"]["tokensConsumed"] > 0
    assert rt.broker.requests("commit")[0]["units"] == 1


def test_an_operator_sees_the_set_aside_products_and_replays_them(redis_server, redis_db, store, keepa, capsys):
    service, _ = keepa
    _, bad = good_and_bad(service, 0, 2)
    for asin in bad:
        store.upsert_deal(asin, NOW, NOW)
        store.set_aside(asin, "peek", "products[0].stats.current must be an integer array", NOW)
    settings = SimpleNamespace(redis_url=redis_server.rsplit("/", 1)[0] + "/9", database_url=None)  # redis_db's
    doc = status.collect(settings, NOW, store)
    assert doc["products_set_aside"] == 2 and "set aside: 2 products" in status.render(doc)

    assert set_aside.main(settings, [], list_only=True, store=store) == 0
    assert store.products_set_aside() == 2 and "2 products set aside" in capsys.readouterr().out
    assert set_aside.main(settings, [bad[0]], list_only=False, store=store) == 0
    assert store.products_set_aside() == 1 and store.candidates_waiting() == 1  # back in line
    assert set_aside.main(settings, [], list_only=False, store=store) == 0
    assert store.products_set_aside() == 0 and store.candidates_waiting() == 2
    assert store.record_product_failure(bad[0], "peek", "again", NOW) == 1  # its count starts afresh
    with pytest.raises(ConfigError, match="not set aside: B0000NOPE0"):
        set_aside.main(settings, ["B0000NOPE0"], list_only=False, store=store)


def test_a_failing_call_is_asked_for_again_a_bounded_number_of_times_then_set_aside(redis_db, store, keepa):
    from keepa_base.errors import TransientError

    service, client = keepa
    good, _ = good_and_bad(service, 1, 0)
    store.upsert_deal(good[0], NOW, NOW)

    class Down:
        def peek(self, asins, **options):
            raise TransientError("Keepa /product: HTTP 503", status=503)

    rt = Runtime(redis_db, store, Down(), rate=1_000)
    request = {"id": "peek:g:0", "payload": asked_peek(redis_db, store.take_candidates(1, NOW))}
    calls = 0
    for _ in range(MAX_CALL_ATTEMPTS + 5):
        rt.broker.sent.clear()
        Steps(rt).peek(request["id"], request["payload"])
        calls += 1
        request = next(iter(rt.broker.requests("peek")), None)
        if request is None:
            break
    else:
        pytest.fail(f"still asking after {MAX_CALL_ATTEMPTS + 5} calls: no limit")
    assert calls == MAX_CALL_ATTEMPTS and store.products_set_aside() == 1
    assert f"failed {MAX_CALL_ATTEMPTS} calls in a row" in store.set_aside_products()[0]["reason"]


def test_a_second_copy_of_a_grant_whose_settle_failed_asks_for_the_malformed_product_under_the_same_id(
        redis_db, store, keepa):
    """The grant's answer is stored and its malformed product asked for alone; then the settle fails
    and Dramatiq runs the grant again, which stores the kept answer (no call) and asks again: under
    the same request id and ticket, so the governor grants the single peek once and it is paid once."""
    service, client = keepa
    good, (bad,) = good_and_bad(service, 2, 1)
    for asin in [*good, bad]:
        store.upsert_deal(asin, NOW, NOW)
    rt = Runtime(redis_db, store, client, rate=1_000)
    payload = asked_peek(redis_db, store.take_candidates(3, NOW))
    steps = Steps(rt)
    settle = steps.settle
    steps.settle = lambda *args, **kwargs: (_ for _ in ()).throw(ConnectionError("the broker blinked"))
    with pytest.raises(ConnectionError):
        steps.peek("peek:g:0", payload)
    steps.settle = settle
    Steps(rt).peek("peek:g:0", payload)                      # the retry, in another worker process
    asks = rt.broker.requests("peek")
    assert len(asks) == 2 and asks[0] == asks[1]             # one request, asked twice: granted once
    assert service.product_calls[bad] == 1                   # the batch's call, made once
