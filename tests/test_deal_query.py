"""The embedded Keepa server honours a deal query's range options as Keepa does and refuses
malformed ones with Keepa's 400; its catalogue's feed numbers and fresh stats differ as real ones do.
The client talks to the server over HTTP on loopback."""

from __future__ import annotations

import json

import pytest

from keepa_api.catalogue import Catalogue
from keepa_api.client import KeepaClient
from keepa_api.deal_query import DealFilter
from keepa_api.server import FakeKeepa
from keepa_api.service import KeepaService
from keepa_base.errors import RequestRejected
from pipeline.screen import screen, selection_ranges

NEW, SALES_RANK, NINETY_DAYS = 1, 3, 3
BASE = {"priceTypes": [NEW], "dateRange": NINETY_DAYS, "sortType": 1}


@pytest.fixture(scope="module")
def keepa():
    catalogue = Catalogue(11, backlog=900, new_per_minute=0, screen_pass_fraction=0.5)
    with FakeKeepa(refill_per_minute=100_000, catalogue=catalogue) as server:
        client = KeepaClient("test-key", base_url=server.base_url, timeout_s=5)
        yield client, catalogue
        client.close()


def whole_feed(client, selection) -> list:
    """Every deal of a query, paged as Keepa says: from page 0 until a page of fewer than 150."""
    deals = []
    for page in range(10_000 // 150 + 1):  # Keepa shows at most 10,000 deals of a query
        got = client.deals(selection, page).deals
        deals.extend(got)
        if len(got) < 150:
            return deals
    raise AssertionError("the feed went on past Keepa's 10,000-deal limit")


def ranged(**ranges) -> dict:
    return {**BASE, "isRangeEnabled": True, **ranges}


@pytest.mark.parametrize(("field", "bounds", "value"), [
    ("currentRange", [3_000, 8_000], lambda d: d.current[NEW]),
    ("deltaPercentRange", [30, 100], lambda d: d.delta_percent[NINETY_DAYS][NEW]),
    ("deltaRange", [500, 5_000], lambda d: d.delta[NINETY_DAYS][NEW]),
    ("salesRankRange", [0, 100_000], lambda d: d.current[SALES_RANK]),
    ("salesRankRange", [300_000, -1], lambda d: d.current[SALES_RANK]),
])
def test_each_range_leaves_exactly_the_deals_outside_it_out(keepa, field, bounds, value):
    client, _ = keepa
    everything = whole_feed(client, BASE)
    low, high = bounds[0], (2**31 - 1 if bounds[1] == -1 else bounds[1])
    inside = [d.asin for d in everything if low <= value(d) <= high]
    assert 0 < len(inside) < len(everything)  # the range really splits this feed
    assert [d.asin for d in whole_feed(client, ranged(**{field: bounds}))] == inside


def test_the_ranges_apply_together_and_page_newest_first(keepa):
    client, catalogue = keepa
    selection = {**BASE, **selection_ranges()}
    passing = [d.asin for d in whole_feed(client, BASE) if screen(d.current, d.avg).viable]
    assert len(passing) > 150  # more than one page
    assert [d.asin for d in whole_feed(client, selection)] == passing
    assert all(catalogue.passes_screen(asin) for asin in passing)


def test_ranges_do_nothing_unless_enabled(keepa):
    client, _ = keepa
    everything = [d.asin for d in whole_feed(client, BASE)]
    assert [d.asin for d in whole_feed(client, {**BASE, "currentRange": [1, 2]})] == everything
    assert [d.asin for d in whole_feed(client, ranged(currentRange=None))] == everything


def test_a_deal_with_no_sales_rank_is_left_out_once_the_rank_range_is_used():
    current, avg = [-1, 2_000, -1, -1], [[0] * 4] * 4
    assert DealFilter(NEW, NINETY_DAYS).matches(current, avg)
    assert not DealFilter(NEW, NINETY_DAYS, sales_rank=(0, 2**31 - 1)).matches(current, avg)
    assert DealFilter(NEW, NINETY_DAYS, sales_rank=(0, 2**31 - 1)).matches([-1, 2_000, -1, 7], avg)


def test_a_malformed_range_gets_keepas_400_through_the_client(keepa):
    client, _ = keepa
    with pytest.raises(RequestRejected, match="deltaPercentRange") as caught:
        client.deals(ranged(deltaPercentRange=[5, 100]))
    assert caught.value.status == 400 and caught.value.envelope is not None


@pytest.mark.parametrize(("ranges", "named"), [
    ({"currentRange": 500}, "currentRange"),
    ({"currentRange": [500]}, "currentRange"),
    ({"currentRange": [500, 600, 700]}, "currentRange"),
    ({"currentRange": ["500", 600]}, "currentRange"),
    ({"currentRange": [500.5, 600]}, "currentRange"),
    ({"currentRange": [True, 600]}, "currentRange"),
    ({"currentRange": [900, 600]}, "currentRange"),
    ({"currentRange": [0, 2**31]}, "currentRange"),
    ({"deltaRange": [10, 5]}, "deltaRange"),
    ({"deltaLastRange": {"min": 1}}, "deltaLastRange"),
    ({"deltaPercentRange": [9, 100]}, "deltaPercentRange"),
    ({"deltaPercentRange": [50, 20]}, "deltaPercentRange"),
    ({"salesRankRange": [5_000, 100]}, "salesRankRange"),
    ({"salesRankRange": [0, -2]}, "salesRankRange"),
    ({"isRangeEnabled": "yes"}, "isRangeEnabled"),
])
def test_keepas_limits_are_refused_with_a_400_naming_the_field(ranges, named):
    service = KeepaService(refill_per_minute=100, catalogue=Catalogue(1, backlog=10, new_per_minute=0))
    before = service.books()["spent_total"]
    status, body, _ = service.handle("/deal", {"key": "k", "selection": json.dumps(ranged(**ranges))})
    error = json.loads(body)["error"]
    assert status == 400 and error["type"] == "REQUEST_REJECTED" and named in error["message"]
    assert service.books()["spent_total"] == before  # a refused query costs nothing


def test_the_sales_rank_type_needs_a_percent_range_of_at_least_80():
    service = KeepaService(refill_per_minute=100, catalogue=Catalogue(1, backlog=10, new_per_minute=0))
    selection = {**BASE, "priceTypes": [SALES_RANK], "isRangeEnabled": True}
    refused, _, _ = service.handle("/deal", {"key": "k", "selection": json.dumps(
        {**selection, "deltaPercentRange": [50, 100]})})
    taken, _, _ = service.handle("/deal", {"key": "k", "selection": json.dumps(
        {**selection, "deltaPercentRange": [80, 100]})})
    assert (refused, taken) == (400, 200)


class TestTheCatalogue:
    def test_feed_numbers_and_fresh_stats_differ_in_both_directions_in_the_configured_shares(self):
        catalogue = Catalogue(4, screen_pass_fraction=0.2, viable_fraction=0.5, screen_miss_fraction=0.05)
        n = 6_000
        asins = [catalogue.asin(i) for i in range(n)]
        passing = [a for a in asins if catalogue.passes_screen(a)]
        failing = [a for a in asins if not catalogue.passes_screen(a)]
        assert len(passing) / n == pytest.approx(0.2, abs=0.02)
        assert sum(map(catalogue.is_viable, passing)) / len(passing) == pytest.approx(0.5, abs=0.05)
        assert sum(map(catalogue.is_viable, failing)) / len(failing) == pytest.approx(0.05, abs=0.015)

    def test_the_defaults_keep_a_tenth_of_the_feed_viable_and_the_screen_agrees_with_the_feed_numbers(self):
        catalogue = Catalogue(1, backlog=5_000, new_per_minute=0)
        deals = [catalogue.deal(i) for i in range(5_000)]
        assert sum(catalogue.is_viable(d["asin"]) for d in deals) / 5_000 == pytest.approx(0.10, abs=0.015)
        assert all(screen(d["current"], d["avg"]).viable == catalogue.passes_screen(d["asin"]) for d in deals)

    def test_the_same_seed_gives_the_same_feed_and_the_same_filtered_pages(self):
        query = DealFilter(NEW, NINETY_DAYS, current=(500, 2**31 - 1), delta_percent=(20, 100))
        a, b = Catalogue(9, backlog=2_000, new_per_minute=0), Catalogue(9, backlog=2_000, new_per_minute=0)
        assert a.feed_page(0, 1, query=query) == b.feed_page(0, 1, query=query)
        assert a.feed_page(0, 3) == b.feed_page(0, 3)

    def test_a_share_outside_zero_to_one_is_refused_by_name(self):
        with pytest.raises(ValueError, match="screen_pass_fraction"):
            Catalogue(1, screen_pass_fraction=1.5)
