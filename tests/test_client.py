"""The Keepa client against the embedded server over loopback: every call and every error."""

import json
import logging
import socket
import traceback
from concurrent.futures import ThreadPoolExecutor

import pytest

from actors.processes import WORKER_THREADS
from keepa_api.client import KeepaClient
from keepa_api.records import Deal, Product
from keepa_api.server import FakeKeepa
from keepa_base.errors import (
    BadKey,
    ConfigError,
    KeepaError,
    MalformedResponse,
    NotEnoughTokens,
    RequestRejected,
    TransientError,
)
from pipeline.batching import MAX_SCAN_PAGES

CANARY = "canary-KEY-7f3e9d"
SELECTION = {"priceTypes": [1], "dateRange": 0, "sortType": 1}


class Clock:
    def __init__(self):
        self.now_s = 0.0

    def __call__(self):
        return self.now_s


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def keepa(clock):
    with FakeKeepa(clock=clock, epoch_ms=1_700_000_000_000, seed=1) as server:
        yield server


@pytest.fixture
def client(keepa):
    with KeepaClient(CANARY, base_url=keepa.base_url, timeout_s=5) as c:
        yield c


def test_a_deal_page_decodes_into_typed_deals_carrying_the_envelope(client):
    page = client.deals(SELECTION, page=0)
    assert len(page.deals) == 150 and not page.is_last
    assert all(isinstance(d, Deal) for d in page.deals)
    deal = page.deals[0]
    assert deal.last_update.tzinfo is not None and deal.image.endswith(".jpg")
    assert len(deal.avg) == 4 and len(deal.avg[0]) == len(deal.current)
    assert -1 in deal.current
    assert (page.envelope.tokens_consumed, page.envelope.tokens_left) == (5, 295)


def test_pages_walk_the_feed_until_a_short_last_page(client):
    seen, page = [], 0
    while True:
        result = client.deals(SELECTION, page=page)
        seen += [d.asin for d in result.deals]
        if result.is_last:
            break
        page += 1
    assert page == 2 and len(seen) == len(set(seen)) == 300


def test_peek_returns_stats_without_history_for_one_token_per_asin(client):
    asins = [d.asin for d in client.deals(SELECTION).deals[:10]]
    batch = client.peek(asins, stats_days=90)
    assert [p.asin for p in batch.products] == asins
    assert all(isinstance(p, Product) and p.series == () and p.offers is None for p in batch.products)
    assert batch.products[0].stats.sales_rank_drops_30 >= 0
    assert batch.envelope.tokens_consumed == 10
    assert client.peek(asins, rating=True).envelope.tokens_consumed == 20


def test_commit_returns_offers_and_csv_history_with_gaps(keepa, client):
    asin = next(d.asin for d in client.deals(SELECTION).deals if keepa.service.catalogue.offers_found(d.asin) >= 12)
    batch = client.commit([asin], offers=20, stock=True)
    product = batch.products[0]
    assert len(product.offers) == min(keepa.service.catalogue.offers_found(asin), 20)
    assert all(o.stock is not None and o.price > 0 for o in product.offers)
    assert product.series[1] and product.series[3]
    assert batch.envelope.tokens_consumed == 6 * -(-len(product.offers) // 10) + 2


def test_as_many_calls_at_once_as_a_worker_makes_reuse_pooled_connections_without_a_warning(
        keepa, client, caplog):
    # a worker makes one call per thread plus the feed pages a scan grant reads at once; requests
    # keeps 10 connections a host by default and warns each time it has to drop one
    at_once = WORKER_THREADS + MAX_SCAN_PAGES
    keepa.set_faults(slow_ms=100)  # every call is still open when the last one starts
    with caplog.at_level(logging.WARNING, logger="urllib3"), ThreadPoolExecutor(at_once) as pool:
        for _ in range(2):  # twice: the second round reuses the first's connections (240 of 300 tokens)
            pages = list(pool.map(lambda page: client.deals(SELECTION, page), range(at_once)))
    assert [p.page for p in pages] == list(range(at_once))
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


def test_token_status_is_free(client):
    before = client.token()
    assert before.tokens_consumed == 0 and client.token().tokens_left == before.tokens_left == 300


def test_an_empty_bucket_raises_not_enough_tokens_with_retry_after_refill_in_plus_100(clock):
    with FakeKeepa(clock=clock, start_tokens=0) as keepa, KeepaClient(CANARY, base_url=keepa.base_url) as c:
        clock.now_s = 20.0
        with pytest.raises(NotEnoughTokens) as caught:
            c.deals(SELECTION)
    assert caught.value.status == 429
    assert caught.value.envelope.refill_in_ms == 40_000
    assert caught.value.retry_after_ms == 40_100


def test_a_rejected_key_raises_bad_key_with_the_envelope(keepa):
    with pytest.raises(BadKey) as caught:
        KeepaClient("bad", base_url=keepa.base_url).token()
    assert caught.value.status == 402 and caught.value.envelope is not None


def test_a_refused_request_raises_request_rejected_with_keepas_error_type_and_message(client):
    with pytest.raises(RequestRejected) as caught:
        client.deals({"priceTypes": [1, 2]})
    assert caught.value.error_type == "REQUEST_REJECTED"
    assert "priceTypes" in str(caught.value) and caught.value.envelope.tokens_consumed == 0


def test_an_unknown_endpoint_raises_request_rejected_404(client):
    with pytest.raises(RequestRejected) as caught:
        client._call("bestsellers", {})
    assert caught.value.status == 404 and caught.value.error_type == "NOT_FOUND"


@pytest.mark.parametrize("status", [400, 404, 405])
def test_every_rejection_status_maps_to_request_rejected(client, status):
    body = {"error": {"type": "X", "message": "m", "details": "d"}, "timestamp": 1, "tokensLeft": 1,
            "refillIn": 1, "refillRate": 5}
    with pytest.raises(RequestRejected) as caught:
        client._interpret("deal", status, json.dumps(body).encode())
    assert caught.value.status == status and "m; d" in str(caught.value)


def test_server_errors_raise_transient_error_with_the_envelope(keepa, client):
    keepa.set_faults(error_rate=1.0)
    with pytest.raises(TransientError) as caught:
        client.deals(SELECTION)
    assert caught.value.status == 500 and caught.value.envelope is not None
    with pytest.raises(TransientError):
        client._interpret("deal", 503, b"<html>unavailable</html>")


def test_malformed_bodies_raise_malformed_response_never_an_empty_result(keepa, client):
    keepa.set_faults(malformed_rate=1.0)
    for _ in range(12):
        with pytest.raises(MalformedResponse):
            client.deals(SELECTION)


def test_an_error_object_inside_a_200_is_malformed(client):
    body = {"error": {"type": "X"}, "timestamp": 1, "tokensLeft": 1, "refillIn": 1, "refillRate": 5}
    with pytest.raises(MalformedResponse, match="error"):
        client._interpret("token", 200, json.dumps(body).encode())


def test_a_slow_server_raises_transient_error_after_the_timeout(keepa):
    keepa.set_faults(slow_ms=400)
    with pytest.raises(TransientError, match="within"):
        KeepaClient(CANARY, base_url=keepa.base_url, timeout_s=0.05).token()


def test_a_refused_connection_raises_transient_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientError, match="connection"):
        KeepaClient(CANARY, base_url=f"http://127.0.0.1:{port}").token()


def test_settings_come_from_the_environment_and_bad_values_name_the_variable():
    env = {"KEEPA_API_KEY": "k", "KEEPA_API_URL": "http://x:1/", "KEEPA_DOMAIN": "3"}
    settings = KeepaClient(env=env).settings
    assert (settings.base_url, settings.domain) == ("http://x:1", 3)
    assert KeepaClient(env={"KEEPA_API_KEY": "k"}).settings.base_url == "https://api.keepa.com"
    for bad, name in [({}, "KEEPA_API_KEY"), ({"KEEPA_API_KEY": "k", "KEEPA_DOMAIN": "7"}, "KEEPA_DOMAIN"),
                      ({"KEEPA_API_KEY": "k", "KEEPA_API_URL": "ftp://x"}, "KEEPA_API_URL")]:
        with pytest.raises(ConfigError, match=name):
            KeepaClient(env=bad)


def _everything_said(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc) + repr(getattr(exc, "envelope", None))


def test_the_key_never_appears_in_logs_exceptions_or_reprs(keepa, caplog):
    caplog.set_level(logging.DEBUG)
    client = KeepaClient(CANARY, base_url=keepa.base_url, timeout_s=10)
    hasty = KeepaClient(CANARY, base_url=keepa.base_url, timeout_s=0.05)  # only for the slow answer
    said = [repr(client), repr(client.settings), repr(client.deals(SELECTION)), repr(client.token())]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    failures = [lambda: client.deals({"priceTypes": "x"}), lambda: client._call("nope", {}),
                lambda: KeepaClient(CANARY, base_url=dead).token()]
    keepa.set_faults(slow_ms=300)
    failures.append(hasty.token)
    for fail in failures:
        with pytest.raises(KeepaError) as caught:
            fail()
        said.append(_everything_said(caught.value))
    assert caplog.records, "the calls above should have logged something"
    assert all(CANARY not in text for text in said + [caplog.text])
    assert "<redacted>" in caplog.text or all(CANARY not in r.getMessage() for r in caplog.records)
