"""The embedded Keepa server follows Keepa's token rules, costs and error shapes (docs/keepa.md)."""

import json
import subprocess
import sys
import threading

import pytest
import requests

from keepa_api.catalogue import Catalogue
from keepa_api.server import FakeKeepa
from keepa_api.service import KeepaService
from tests.stack import read_line

DEAL = ("/deal", {"key": "k", "selection": json.dumps({"priceTypes": [1]})})
PEEK = ("/product", {"key": "k", "asin": "B000000001,B000000002", "history": "0", "stats": "90"})
TOKEN = ("/token", {"key": "k"})


class Clock:
    def __init__(self):
        self.now_s = 1000.0

    def __call__(self):
        return self.now_s

    def advance(self, seconds):
        self.now_s += seconds


def service(clock=None, **options):
    return KeepaService(clock=clock or Clock(), epoch_ms=1_700_000_000_000, **options)


def call(svc, request):
    status, body, _delay = svc.handle(*request)
    return status, json.loads(body)


@pytest.mark.parametrize(
    ("start", "request_", "status", "left_after", "consumed"),
    [
        (10, DEAL, 200, 5, 5),           # an ordinary deal page costs 5
        (3, DEAL, 200, -2, 5),           # a positive balance may go into deficit
        (1, PEEK, 200, -1, 2),           # one token per ASIN for a peek
        (0, DEAL, 429, 0, 0),            # zero balance: refused, nothing charged
        (-4, PEEK, 429, -4, 0),          # deficit: refused, nothing charged
        (0, TOKEN, 200, 0, 0),           # /token is free and answers at any balance
        (-7, TOKEN, 200, -7, 0),
    ],
)
def test_calls_are_charged_in_full_only_from_a_positive_balance(start, request_, status, left_after, consumed):
    svc = service(start_tokens=start)
    got_status, body = call(svc, request_)
    assert got_status == status
    assert body["tokensLeft"] == left_after
    assert body["tokensConsumed"] == consumed
    assert svc.books()["charged_to_callers_total"] == consumed


def test_a_429_body_still_carries_the_whole_envelope():
    status, body = call(service(start_tokens=0), DEAL)
    assert status == 429
    assert {"timestamp", "tokensLeft", "refillIn", "refillRate", "tokensConsumed"} <= set(body)


def test_refill_in_counts_down_in_real_milliseconds_even_with_a_short_minute():
    clock = Clock()
    svc = service(clock, minute_seconds=6.0)
    assert call(svc, TOKEN)[1]["refillIn"] == 6000
    clock.advance(1.5)
    assert call(svc, TOKEN)[1]["refillIn"] == 4500
    assert call(svc, TOKEN)[1]["timestamp"] == 1_700_000_000_000 + 1500


def test_refill_arrives_in_one_lump_per_minute():
    clock = Clock()
    svc = service(clock, start_tokens=0)
    clock.advance(59.9)
    assert call(svc, TOKEN)[1]["tokensLeft"] == 0
    clock.advance(0.1)
    assert call(svc, TOKEN)[1]["tokensLeft"] == 5


def test_the_balance_never_exceeds_the_cap():
    clock = Clock()
    svc = service(clock, refill_per_minute=5, start_tokens=298)
    clock.advance(10 * 60)
    assert call(svc, TOKEN)[1]["tokensLeft"] == 300
    svc = service(clock, refill_per_minute=5, max_tokens=20)
    clock.advance(10 * 60)
    assert call(svc, TOKEN)[1]["tokensLeft"] == 20


def test_commit_costs_six_per_ten_offers_found_plus_two_with_stock():
    svc = service()
    asin = "B000000003"
    found = min(svc.catalogue.offers_found(asin), 20)
    expected = max(1, 6 * -(-found // 10)) + 2
    _, body = call(svc, ("/product", {"key": "k", "asin": asin, "offers": "20", "stock": "1"}))
    assert body["tokensConsumed"] == expected
    assert len(body["products"][0]["offers"]) == found


def test_rating_adds_one_token_per_asin_to_a_peek():
    _, body = call(service(), ("/product", {**PEEK[1], "rating": "1"}))
    assert body["tokensConsumed"] == 4


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/deal", {"selection": "{not json"}),
        ("/deal", {"selection": "[1]"}),
        ("/deal", {"selection": json.dumps({"priceTypes": [1, 2]})}),
        ("/deal", {"selection": json.dumps({"priceTypes": [1], "page": -1})}),
        ("/deal", {"selection": json.dumps({"priceTypes": [1], "page": "x"})}),
        ("/deal", {"selection": json.dumps({"priceTypes": [1], "domainId": [1]})}),
        ("/deal", {}),
        ("/product", {"asin": ""}),
        ("/product", {"asin": ",".join(["B000000001"] * 101)}),
        ("/product", {"asin": "not-an-asin"}),
        ("/product", {"asin": "B000000001", "offers": "10"}),
        ("/product", {"asin": "B000000001", "stock": "2"}),
        ("/product", {"asin": "B000000001", "stats": "x" * 5000}),
        ("/product", {"asin": "B000000001", "domain": "7"}),
    ],
)
def test_bad_parameters_get_a_400_with_keepas_error_body_and_cost_nothing(path, params):
    svc = service()
    status, body = call(svc, (path, {"key": "k", **params}))
    assert status == 400
    assert body["error"]["type"] == "REQUEST_REJECTED" and body["error"]["message"]
    assert body["tokensConsumed"] == 0 and svc.books()["spent_total"] == 0


@pytest.mark.parametrize("key", ["", "bad"])
def test_keys_on_the_reject_list_get_a_402_with_an_envelope(key):
    status, body = call(service(), ("/token", {"key": key}))
    assert status == 402 and body["error"]["type"] == "PAYMENT_REQUIRED" and "tokensLeft" in body


def test_a_storm_answers_429_for_the_next_calls_then_recovers():
    svc = service()
    svc.faults.update({"storm_429": 2})
    assert [call(svc, DEAL)[0] for _ in range(3)] == [429, 429, 200]


def test_rogue_spending_takes_tokens_once_per_minute():
    clock = Clock()
    svc = service(clock, start_tokens=100)
    svc.faults.update({"rogue_tokens_per_minute": 7})
    clock.advance(120)
    assert call(svc, TOKEN)[1]["tokensLeft"] == 100 + 10 - 14
    assert svc.books()["rogue_spent_total"] == 14


def test_the_feed_grows_over_time_and_pages_newest_first():
    clock = Clock()
    svc = service(clock, start_tokens=1000)
    first = call(svc, DEAL)[1]["deals"]["dr"]
    clock.advance(30 * 60)
    later = call(svc, DEAL)[1]["deals"]["dr"]
    assert later[0]["asin"] != first[0]["asin"]
    assert later[0]["lastUpdate"] > first[0]["lastUpdate"]
    assert first[0]["asin"] in {d["asin"] for d in later}


def test_a_lumped_feed_stands_still_within_a_minute_and_takes_the_whole_minute_at_its_start():
    even = Catalogue(7, backlog=10, new_per_minute=300)
    lumped = Catalogue(7, backlog=10, new_per_minute=300, lumped=True)
    assert [even.feed_size(m) for m in (0, 0.5, 1, 1.5, 2)] == [10, 160, 310, 460, 610]
    assert [lumped.feed_size(m) for m in (0, 0.5, 0.99, 1, 1.5, 2)] == [10, 10, 10, 310, 310, 610]
    assert lumped.feed_page(1.0, 0) == lumped.feed_page(1.9, 0)  # a scan inside the minute reads one feed
    for index in (10, 309, 310, 609):  # a deal is listed from the minute it appears at, not before
        minute = lumped.appears_at(index)
        assert lumped.feed_size(minute) > index >= lumped.feed_size(minute - 0.01)
    with pytest.raises(ValueError, match="whole"):
        Catalogue(7, new_per_minute=2.5, lumped=True)


def test_the_catalogue_is_deterministic_per_seed_with_a_viable_minority():
    a, b, c = Catalogue(7), Catalogue(7), Catalogue(8)
    assert a.feed_page(0, 0) == b.feed_page(0, 0)
    assert a.product("B000000009", stats_days=90, offers=20) == b.product("B000000009", stats_days=90, offers=20)
    assert a.feed_page(0, 0) != c.feed_page(0, 0)
    share = sum(a.is_viable(a.asin(i)) for i in range(2000)) / 2000
    assert 0.05 < share < 0.15


def test_concurrent_callers_are_charged_exactly_what_they_are_told():
    with FakeKeepa(start_tokens=100_000, max_tokens=100_000) as keepa:
        told = []

        def worker():
            with requests.Session() as session:
                for _ in range(25):
                    r = session.get(keepa.base_url + "/product", params=PEEK[1], timeout=5)
                    told.append(r.json()["tokensConsumed"])

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        books = keepa.books()
    assert len(told) == 200
    assert books["charged_to_callers_total"] == sum(told) == books["spent_total"] == 400
    assert books["balance"] == 100_000 - 400


def test_faults_switch_over_the_admin_endpoint_and_bad_switches_are_refused():
    with FakeKeepa() as keepa:
        url = keepa.base_url
        assert requests.post(url + "/_admin/faults", json={"error_rate": 1}, timeout=5).status_code == 200
        assert requests.get(url + "/token", params={"key": "k"}, timeout=5).status_code == 200
        assert requests.get(url + "/deal", params=DEAL[1], timeout=5).status_code == 500
        assert requests.post(url + "/_admin/faults", json={"nope": 1}, timeout=5).status_code == 400
        assert requests.post(url + "/_admin/faults", data=b"[", timeout=5).status_code == 400
        assert requests.get(url + "/_admin/books", timeout=5).json()["requests_total"]["/deal"] == 1


def test_unknown_paths_get_404_and_other_methods_405_over_http():
    with FakeKeepa() as keepa:
        r = requests.get(keepa.base_url + "/bestsellers", params={"key": "k"}, timeout=5)
        assert r.status_code == 404 and "tokensLeft" in r.json()
        r = requests.put(keepa.base_url + "/deal", timeout=5)
        assert r.status_code == 405 and r.json()["error"]["type"] == "METHOD_NOT_ALLOWED"


def test_post_with_a_form_body_is_served_like_get():
    with FakeKeepa() as keepa:
        r = requests.post(keepa.base_url + "/product", data=PEEK[1], timeout=5)
        assert r.status_code == 200 and len(r.json()["products"]) == 2


def test_the_cli_prints_its_base_url_first_and_serves_keepa():
    proc = subprocess.Popen([sys.executable, "-m", "keepa_deals.cli", "fake-keepa", "--port", "0",
                             "--seed", "3", "--minute-seconds", "1"], stdout=subprocess.PIPE, text=True)
    try:
        url = read_line(proc.stdout, 30, "the base URL").strip()
        assert url.startswith("http://127.0.0.1:")
        body = requests.get(url + "/token", params={"key": "k"}, timeout=5).json()
        assert body["refillRate"] == 5 and body["tokensLeft"] == 300 and body["refillIn"] <= 1000
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
