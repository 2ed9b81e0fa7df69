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
    decode_deals,
    decode_envelope,
    decode_products,
    keepa_minute_to_datetime,
    load_body,
)
from keepa_deals.errors import MalformedResponse

CAT = Catalogue(5)
ENVELOPE = {"timestamp": 1_700_000_000_000, "tokensLeft": 10, "refillIn": 500, "refillRate": 5,
            "tokensConsumed": 5}
DEAL_BODY = {"deals": {"dr": CAT.feed_page(0, 0)[:3]}, **ENVELOPE}
PRODUCT_BODY = {"products": [CAT.product(CAT.asin(i), stats_days=90, history=True, offers=20, stock=True)
                             for i in range(2)], **ENVELOPE}


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


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("deals", "dr", 0, "asin"), None, "deals.dr[0].asin"),
        (("deals", "dr", 1, "current"), [1, 2.5], "deals.dr[1].current[1]"),
        (("deals", "dr", 0, "avg"), [[1], "x"], "deals.dr[0].avg[1]"),
        (("deals", "dr", 0, "avg"), [{"1": 2}], "deals.dr[0].avg[0]"),
        (("deals", "dr", 0, "delta"), [[1, "2"]], "deals.dr[0].delta[0][1]"),
        (("deals", "dr", 2, "lastUpdate"), -5, "deals.dr[2].lastUpdate"),
        (("deals", "dr", 0, "creationDate"), 10**30, "deals.dr[0].creationDate"),
        (("deals", "dr", 0, "image"), [300, 1], "deals.dr[0].image"),
        (("deals", "dr", 0, "title"), 5, "deals.dr[0].title"),
        (("deals", "dr"), {"a": 1}, "deals.dr"),
        (("deals",), [], "deals"),
    ],
)
def test_a_bad_deal_field_is_named_in_the_error(path, value, named):
    body = copy.deepcopy(DEAL_BODY)
    target = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(MalformedResponse) as caught:
        decode_deals(body)
    assert named in str(caught.value)


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
    _only_malformed(decode_deals, body)
    _only_malformed(decode_envelope, body)


@FUZZ
@given(path=st.sampled_from(PRODUCT_PATHS), junk=json_values, delete=st.booleans())
def test_a_product_batch_with_any_field_replaced_by_junk_decodes_or_is_malformed(path, junk, delete):
    _only_malformed(decode_products, _mutate(PRODUCT_BODY, path, junk, delete))


@settings(max_examples=1000, deadline=None)
@given(payload=json_values)
def test_arbitrary_json_values_decode_or_are_malformed(payload):
    for decode in (decode_deals, decode_products, decode_envelope):
        _only_malformed(decode, payload)


@settings(max_examples=1000, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_parse_or_are_malformed(raw):
    try:
        body = load_body(raw)
    except MalformedResponse:
        return
    for decode in (decode_deals, decode_products, decode_envelope):
        _only_malformed(decode, body)


def test_the_fuzz_corpus_round_trips_through_json():
    assert load_body(json.dumps(DEAL_BODY)) == DEAL_BODY
