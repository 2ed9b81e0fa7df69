"""Decoders are total: a frozen record or MalformedResponse naming the field, never anything else."""

import contextlib
import copy
import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keepa_api.catalogue import Catalogue
from keepa_api.records import (
    Deal,
    decode_deals,
    decode_envelope,
    decode_products,
    keepa_minute_to_datetime,
    load_body,
)
from keepa_base.errors import MalformedResponse

CAT = Catalogue(5)
ENVELOPE = {"timestamp": 1_700_000_000_000, "tokensLeft": 10, "refillIn": 500, "refillRate": 5,
            "tokensConsumed": 5}
DEAL_BODY = {"deals": {"dr": CAT.feed_page(0, 0)[:3]}, **ENVELOPE}
WITH_OFFERS = [a for a in map(CAT.asin, range(20)) if CAT.offers_found(a)][:2]  # the tests read offers[0]
PRODUCT_BODY = {"products": [CAT.product(asin, stats_days=90, history=True, offers=20, stock=True)
                             for asin in WITH_OFFERS], **ENVELOPE}
DEAL_ACCESSORS = sorted(name for name, member in vars(Deal).items() if isinstance(member, property))


def _read_every_field(deals):
    """What a consumer may do with decoded deals: read every accessor, print, compare and hash them."""
    for deal in deals:
        for name in DEAL_ACCESSORS:
            getattr(deal, name)
        repr(deal)
        hash(deal)
        assert deal == deal
    return deals


def decode_and_read(body):
    return _read_every_field(decode_deals(body))


def test_keepa_minutes_become_utc_datetimes():
    assert keepa_minute_to_datetime(0) == datetime(2011, 1, 1, tzinfo=UTC)
    assert keepa_minute_to_datetime(7_364_160) == datetime(2025, 1, 1, tzinfo=UTC)
    assert keepa_minute_to_datetime(1).timestamp() * 1000 == (1 + 21_564_000) * 60_000


def test_a_deal_keeps_prices_in_cents_with_minus_one_for_no_offer_and_decodes_its_image():
    raw = DEAL_BODY["deals"]["dr"][0]
    deal = decode_deals(DEAL_BODY)[0]
    assert deal.current == tuple(raw["current"]) and -1 in deal.current
    assert deal.avg == tuple(tuple(row) for row in raw["avg"])
    assert deal.image == "".join(map(chr, raw["image"]))


def test_null_elements_become_minus_one_and_null_arrays_become_empty():
    body = copy.deepcopy(DEAL_BODY)
    body["deals"]["dr"][0]["current"][0] = None
    body["deals"]["dr"][0]["delta"] = None
    body["deals"]["dr"][0]["avg"][1] = None
    deal = decode_deals(body)[0]
    assert deal.current[0] == -1 and deal.delta == () and deal.avg[1] == ()


def test_product_series_keep_gaps_and_offers_keep_their_latest_price():
    product = decode_products(PRODUCT_BODY)[0]
    raw = PRODUCT_BODY["products"][0]
    new_series = product.series[1]
    assert len(new_series) == len(raw["csv"][1]) // 2
    assert any(value == -1 for _, value in new_series) or -1 not in raw["csv"][1][1::2]
    assert product.offers[0].price == raw["offers"][0]["offerCSV"][-2]


def test_stats_min_and_max_keep_keepa_minutes_and_name_a_bad_pair():
    raw = PRODUCT_BODY["products"][0]["stats"]
    stats = decode_products(PRODUCT_BODY)[0].stats
    assert stats.min == tuple(raw["min"]) and stats.max == tuple(raw["max"])
    assert any(p is not None for p in stats.min)
    with_null = _with(PRODUCT_BODY, ("products", 0, "stats", "min"), [[7_000_000, None], None])
    assert decode_products(with_null)[0].stats.min == ([7_000_000, -1], None)  # a null value is -1
    assert hash(stats) is not None  # min and max hold lists, so they stay out of the hash
    for bad, named in (([True, 1], "stats.min[1][0]"),
                       ([5, 1, 2], "stats.min[1]"), ([-4, 1], "stats.min[1][0]"), (["x", 1], "stats.min[1]"),
                       ({"a": 1}, "stats.min[1]")):
        body = _with(PRODUCT_BODY, ("products", 0, "stats", "min"), [[7_000_000, 10], bad, None])
        with pytest.raises(MalformedResponse, match=named.replace("[", r"\[").replace("]", r"\]")):
            decode_products(body)


def _with(body, path, value):
    body = copy.deepcopy(body)
    target = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return body


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("deals", "dr", 0, "asin"), None, "deals.dr[0].asin"),
        (("deals", "dr", 0, "avg"), [[1], "x"], "deals.dr[0].avg[1]"),
        (("deals", "dr", 0, "avg"), [{"1": 2}], "deals.dr[0].avg[0]"),
        (("deals", "dr", 1, "deltaPercent"), 7, "deals.dr[1].deltaPercent"),
        (("deals", "dr", 0, "current"), {"1": 2}, "deals.dr[0].current"),
        (("deals", "dr", 0, "categories"), [1, "x"], "deals.dr[0].categories[1]"),
        (("deals", "dr", 2, "lastUpdate"), -5, "deals.dr[2].lastUpdate"),
        (("deals", "dr", 0, "creationDate"), 10**30, "deals.dr[0].creationDate"),
        (("deals", "dr", 0, "image"), "x.jpg", "deals.dr[0].image"),
        (("deals", "dr", 0, "title"), 5, "deals.dr[0].title"),
        (("deals", "dr"), {"a": 1}, "deals.dr"),
        (("deals",), [], "deals"),
    ],
)
def test_a_bad_deal_scalar_or_array_shape_is_named_when_the_page_is_decoded(path, value, named):
    with pytest.raises(MalformedResponse) as caught:
        decode_deals(_with(DEAL_BODY, path, value))
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("path", "value", "accessor", "named"),
    [
        (("deals", "dr", 1, "current"), [1, 2.5], "current", "deals.dr[1].current[1]"),
        (("deals", "dr", 0, "delta"), [[1, "2"]], "delta", "deals.dr[0].delta[0][1]"),
        (("deals", "dr", 2, "deltaPercent", 3, 0), [], "delta_percent", "deals.dr[2].deltaPercent[3][0]"),
        (("deals", "dr", 0, "avg", 1, 2), "12", "avg", "deals.dr[0].avg[1][2]"),
        (("deals", "dr", 0, "image"), [300, 1], "image", "deals.dr[0].image"),
    ],
)
def test_a_bad_array_element_is_named_on_the_first_and_every_read_of_its_accessor(path, value, accessor, named):
    deal = decode_deals(_with(DEAL_BODY, path, value))[path[2]]
    for _ in range(2):
        with pytest.raises(MalformedResponse) as caught:
            getattr(deal, accessor)
        assert named in str(caught.value)


def test_a_checked_array_is_kept_and_the_other_arrays_are_unaffected_by_a_bad_one():
    deal = decode_deals(_with(DEAL_BODY, ("deals", "dr", 0, "avg", 0, 0), 1.5))[0]
    assert deal.delta is deal.delta and deal.current is deal.current
    assert deal.delta_percent == tuple(map(tuple, DEAL_BODY["deals"]["dr"][0]["deltaPercent"]))
    with pytest.raises(MalformedResponse, match=r"deals\.dr\[0\]\.avg\[0\]\[0\]"):
        _ = deal.avg


def test_deals_are_read_only_values():
    first, again = decode_deals(DEAL_BODY), decode_deals(copy.deepcopy(DEAL_BODY))
    assert first == again and hash(first[0]) == hash(again[0]) and first[0] != first[1]
    assert first[0].asin in repr(first[0])
    with pytest.raises(AttributeError):
        first[0].avg = ()


def test_a_missing_current_array_is_malformed_not_empty():
    body = copy.deepcopy(DEAL_BODY)
    del body["deals"]["dr"][0]["current"]
    with pytest.raises(MalformedResponse, match="current"):
        decode_deals(body)


@pytest.mark.parametrize("raw", [b"", b"<html>", b'{"a": NaN}', b"[" * 100_000, b"\xff\xfe", b"1e999x"])
def test_bodies_that_are_not_strict_json_are_malformed(raw):
    with pytest.raises(MalformedResponse):
        load_body(raw)


def test_an_envelope_with_an_infinite_number_is_malformed():
    with pytest.raises(MalformedResponse):
        decode_envelope(load_body(b'{"timestamp": 1e400, "tokensLeft": 1, "refillIn": 1, "refillRate": 1}'))


# -- hostile payloads ---------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


DEAL_PATHS = list(_paths(DEAL_BODY))
PRODUCT_PATHS = list(_paths(PRODUCT_BODY))


def _mutate(node, path, junk, delete):
    """A copy of ``node`` with the value at ``path`` replaced (or deleted); copies only the path."""
    if not path:
        return junk
    head, rest = path[0], path[1:]
    node = node.copy()
    if not rest and delete and isinstance(node, dict):
        del node[head]
    else:
        node[head] = _mutate(node[head], rest, junk, delete)
    return node


def _only_malformed(decode, payload):
    """Decode; MalformedResponse is fine, any other exception fails the test."""
    with contextlib.suppress(MalformedResponse):
        decode(payload)


FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(path=st.sampled_from(DEAL_PATHS), junk=json_values, delete=st.booleans())
def test_a_deal_page_with_any_field_replaced_by_junk_decodes_or_is_malformed(path, junk, delete):
    body = _mutate(DEAL_BODY, path, junk, delete)
    _only_malformed(decode_and_read, body)
    _only_malformed(decode_envelope, body)


@FUZZ
@given(path=st.sampled_from(PRODUCT_PATHS), junk=json_values, delete=st.booleans())
def test_a_product_batch_with_any_field_replaced_by_junk_decodes_or_is_malformed(path, junk, delete):
    _only_malformed(decode_products, _mutate(PRODUCT_BODY, path, junk, delete))


@settings(max_examples=1000, deadline=None)
@given(payload=json_values)
def test_arbitrary_json_values_decode_or_are_malformed(payload):
    for decode in (decode_and_read, decode_products, decode_envelope):
        _only_malformed(decode, payload)


@settings(max_examples=1000, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_parse_or_are_malformed(raw):
    try:
        body = load_body(raw)
    except MalformedResponse:
        return
    for decode in (decode_and_read, decode_products, decode_envelope):
        _only_malformed(decode, body)


def test_the_fuzz_corpus_round_trips_through_json():
    assert load_body(json.dumps(DEAL_BODY)) == DEAL_BODY
