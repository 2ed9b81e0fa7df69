"""Keepa's token rules (docs/keepa.md), table-driven, on the pure model."""

import pytest

from keepa_api.tokens import Envelope, RateSchedule, TokenBucket, merge_envelopes

MINUTE = 60_000


@pytest.mark.parametrize(
    ("start", "cost", "accepted", "after"),
    [
        (10, 3, True, 7),       # ordinary call
        (1, 20, True, -19),     # deficit is allowed from a positive balance
        (0, 1, False, 0),       # zero balance: refused, nothing charged
        (-5, 1, False, -5),     # negative balance: refused
        (300, 0, True, 300),    # a free call (/token) is always fine
    ],
)
def test_a_call_is_charged_in_full_only_from_a_positive_balance(start, cost, accepted, after):
    bucket = TokenBucket(5, start_tokens=start)
    assert bucket.charge(cost, now_ms=0) is accepted
    assert bucket.balance == after


def test_refill_arrives_in_one_lump_per_minute():
    bucket = TokenBucket(5)
    bucket.advance(MINUTE - 1)
    assert bucket.balance == 0
    bucket.advance(MINUTE)
    assert bucket.balance == 5
    bucket.advance(3 * MINUTE + 59_999)
    assert bucket.balance == 15


def test_balance_is_capped_at_sixty_refills_and_the_overflow_is_counted():
    bucket = TokenBucket(5, start_tokens=298)
    bucket.advance(2 * MINUTE)
    assert bucket.balance == 300
    assert bucket.lost_at_cap_total == 8
    assert bucket.refilled_total == 2


def test_a_plan_may_set_its_own_cap():
    bucket = TokenBucket(5, max_tokens=275, start_tokens=270)
    bucket.advance(5 * MINUTE)
    assert bucket.balance == 275


def test_refill_in_counts_down_to_the_next_lump():
    bucket = TokenBucket(5)
    assert bucket.envelope(0).refill_in_ms == MINUTE
    assert bucket.envelope(45_000).refill_in_ms == 15_000
    assert bucket.envelope(MINUTE).refill_in_ms == MINUTE


def test_rate_may_change_over_time():
    bucket = TokenBucket([[0, 5], [2, 20]])
    bucket.advance(4 * MINUTE)
    assert bucket.balance == 5 + 5 + 20 + 20
    assert bucket.envelope(4 * MINUTE).refill_rate == 20


def test_the_books_balance_to_the_token():
    bucket = TokenBucket(7, start_tokens=-40, max_tokens=100)
    for minute in range(1, 200):
        bucket.charge(13 if minute % 3 else 2, now_ms=minute * MINUTE + 5)
    assert bucket.start_tokens + bucket.refilled_total - bucket.spent_total == bucket.balance


def test_envelope_round_trips_through_keepa_field_names():
    env = Envelope(timestamp_ms=1, tokens_left=-3, refill_in_ms=400, refill_rate=5, tokens_consumed=6)
    body = env.to_json()
    assert body["tokensLeft"] == -3 and body["refillIn"] == 400
    assert Envelope.from_json(body) == env


def test_the_envelopes_of_one_grants_calls_merge_into_the_last_answer_with_every_charge():
    first = Envelope(timestamp_ms=10, tokens_left=95, refill_in_ms=900, refill_rate=5, tokens_consumed=5)
    last = Envelope(timestamp_ms=12, tokens_left=85, refill_in_ms=700, refill_rate=5, tokens_consumed=5)
    tie = Envelope(timestamp_ms=12, tokens_left=90, refill_in_ms=700, refill_rate=5, tokens_consumed=5)
    merged = merge_envelopes([first, tie, last])
    assert (merged.timestamp_ms, merged.tokens_left, merged.tokens_consumed) == (12, 85, 15)
    assert merge_envelopes([first]) == first
    with pytest.raises(ValueError, match="at least one"):
        merge_envelopes([])


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ([], "not a JSON object"),
        ({"timestamp": 1, "tokensLeft": 1, "refillIn": 1}, "refillRate"),
        ({"timestamp": 1, "tokensLeft": "x", "refillIn": 1, "refillRate": 5}, "tokensLeft"),
        ({"timestamp": 1, "tokensLeft": 1, "refillIn": -1, "refillRate": 5}, "refillIn"),
        ({"timestamp": 1, "tokensLeft": 1, "refillIn": 1, "refillRate": True}, "refillRate"),
    ],
)
def test_a_bad_envelope_is_an_error_naming_the_field(body, named):
    with pytest.raises(ValueError, match=named):
        Envelope.from_json(body)


def test_rate_schedule_rejects_negative_steps():
    with pytest.raises(ValueError, match="negative"):
        RateSchedule([[0, 5], [10, -1]])
