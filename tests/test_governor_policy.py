"""The governor's policy, message by message, on an injected clock."""

import pytest

from governor.config import GovernorConfig
from governor.model import COMMIT, PEEK, UPSERT, Request
from governor.policy import Governor
from keepa_api.tokens import Envelope

MINUTE = 60_000


def env(tokens_left, *, at=0, rate=5, refill_in=MINUTE, consumed=0):
    return Envelope(timestamp_ms=at, tokens_left=tokens_left, refill_in_ms=refill_in,
                    refill_rate=rate, tokens_consumed=consumed)


def synced(balance, *, rate=5, at=0, **config):
    gov = Governor(GovernorConfig(**config))
    gov.sync(env(balance, at=at, rate=rate), at)
    return gov


def ids(decision):
    return [g.id for g in decision.grants]


def test_nothing_is_granted_before_the_first_envelope():
    gov = Governor()
    gov.request(Request("u1", UPSERT), 0)
    assert gov.decide(0).grants == []
    gov.sync(env(100), 0)
    assert ids(gov.decide(0)) == ["u1"]


def test_grants_follow_priority_upsert_then_commit_then_peek():
    gov = synced(300, rate=100, recharge="off")
    for req in (Request("p1", PEEK), Request("c1", COMMIT), Request("u1", UPSERT)):
        gov.request(req, 0)
    assert ids(gov.decide(0)) == ["u1", "c1", "p1"]


def test_no_grant_at_or_below_the_floor_and_the_deficit_is_at_most_one_call():
    gov = synced(15, recharge="off")
    for n in range(5):
        gov.request(Request(f"c{n}", COMMIT), 0)
    decision = gov.decide(0)
    assert ids(decision) == ["c0"]
    assert gov.balance == 15 - 20
    assert gov.decide(30_000).grants == []
    assert decision.wake_at_ms == MINUTE


def test_a_request_above_the_bucket_is_rejected_at_once_naming_cost_and_size():
    gov = synced(0)
    rejection = gov.request(Request("big", COMMIT, units=20), 0)
    assert rejection is not None
    assert "400 tokens" in rejection.reason and "300 tokens" in rejection.reason
    assert gov.pending() == 0


def test_impossible_requests_queued_before_the_first_envelope_are_rejected_on_sync():
    gov = Governor()
    gov.request(Request("big", COMMIT, units=20), 0)
    gov.sync(env(0), 0)
    decision = gov.decide(0)
    assert [r.request.id for r in decision.rejections] == ["big"]


def test_a_repeated_request_or_settle_changes_nothing():
    gov = synced(100, recharge="off")
    gov.request(Request("c1", COMMIT), 0)
    gov.request(Request("c1", COMMIT), 0)
    assert ids(gov.decide(0)) == ["c1"]
    gov.request(Request("c1", COMMIT), 1)
    assert gov.decide(1).grants == []
    assert gov.settle("c1", env(84, at=2, consumed=16), 2) is True
    before = (gov.balance, dict(gov.tokens_by_class))
    assert gov.settle("c1", env(50, at=3, consumed=16), 3) is False
    assert (gov.balance, gov.tokens_by_class) == before


def test_settle_takes_keepa_numbers_as_truth_and_learns_the_cost():
    gov = synced(100, recharge="off")
    gov.request(Request("c1", COMMIT), 0)
    gov.decide(0)
    gov.settle("c1", env(88, at=1, consumed=12), 1)
    assert gov.balance == 88
    assert gov.costs.mean(COMMIT) == 12


def test_tokens_spent_outside_the_governor_are_noticed():
    gov = synced(100, recharge="off")
    gov.request(Request("p1", PEEK), 0)
    gov.decide(0)
    gov.settle("p1", env(60, at=1, consumed=1), 1)  # 39 tokens went somewhere else
    assert gov.external_tokens == 39


def test_refills_the_model_expects_are_applied_on_decide():
    gov = synced(0, recharge="off")
    gov.request(Request("u1", UPSERT), 0)
    assert gov.decide(59_999).grants == []
    assert ids(gov.decide(MINUTE)) == ["u1"]


def test_backpressure_holds_peeks_while_the_viable_buffer_is_full():
    gov = synced(300, rate=100, recharge="off", peek_buffer=2)
    for n in range(5):
        gov.request(Request(f"p{n}", PEEK), 0)
    assert ids(gov.decide(0)) == ["p0", "p1"]
    gov.settle("p0", env(299, at=1, rate=100, consumed=1), 1)
    assert ids(gov.decide(1)) == ["p2"]


def test_grants_first_when_the_next_refill_would_overflow_the_cap():
    gov = synced(298, recharge="off", peek_buffer=1)
    gov.request(Request("p0", PEEK), 0)
    gov.request(Request("p1", PEEK), 0)
    assert ids(gov.decide(0)) == ["p0", "p1"]  # p1 passes backpressure: 5 tokens would be lost


class TestRecharge:
    def test_enters_below_the_low_mark_and_holds_back_all_but_upsert(self):
        gov = synced(25, recharge="on")
        gov.request(Request("c1", COMMIT), 0)
        gov.request(Request("c2", COMMIT), 0)
        gov.request(Request("u1", UPSERT), 0)
        assert ids(gov.decide(0)) == ["u1", "c1"]
        assert gov.recharge.active
        assert gov.decide(MINUTE).grants == []

    def test_leaves_at_the_high_mark_which_never_exceeds_cap_minus_one_refill(self):
        gov = synced(10, recharge="on", recharge_high=299)
        assert gov.recharge_high() == 295
        gov.request(Request("c1", COMMIT), 0)
        assert gov.decide(0).grants == []
        assert gov.recharge.active
        gov.sync(env(294, at=10 * MINUTE, refill_in=MINUTE), 10 * MINUTE)
        assert gov.decide(10 * MINUTE).grants == []
        gov.sync(env(295, at=11 * MINUTE, refill_in=MINUTE), 11 * MINUTE)
        assert ids(gov.decide(11 * MINUTE)) == ["c1"]
        assert not gov.recharge.active

    def test_times_out_and_does_not_flap_straight_back_in(self):
        gov = synced(30, recharge="on", recharge_timeout_ms=10 * MINUTE)
        gov.request(Request("c0", COMMIT), 0)
        gov.decide(0)
        assert gov.recharge.active
        gov.settle("c0", env(10, at=1, consumed=20), 1)
        for n in range(1, 4):
            gov.request(Request(f"c{n}", COMMIT), 2)
        assert gov.decide(9 * MINUTE).grants == []
        gov.sync(env(-100, at=9 * MINUTE + 1), 9 * MINUTE + 1)  # rogue spending
        assert gov.decide(10 * MINUTE).grants == []
        assert not gov.recharge.active and gov.recharge.exits_by_timeout == 1
        gov.sync(env(3, at=11 * MINUTE), 11 * MINUTE)
        assert ids(gov.decide(11 * MINUTE)) == ["c1"]  # sipping below the low mark, not re-entering
        assert not gov.recharge.active

    def test_is_off_by_default_at_ten_tokens_a_minute_or_more(self):
        gov = synced(5, rate=10)
        gov.request(Request("c1", COMMIT), 0)
        gov.decide(0)
        assert not gov.recharge.enabled


def test_config_rejects_bad_values_naming_them():
    with pytest.raises(ValueError, match="weights"):
        GovernorConfig(weights={UPSERT: 1, COMMIT: 0, PEEK: 1})
    with pytest.raises(ValueError, match="recharge"):
        GovernorConfig(recharge="sometimes")


def test_an_empty_bucket_seen_twice_is_not_mistaken_for_a_tiny_cap():
    gov = synced(300, rate=5, recharge="off")
    for n in range(2):
        gov.sync(env(300, at=n), n)
        gov.request(Request(f"c{n}", COMMIT), n)
        grant = gov.decide(n).grants[0]
        gov.settle(grant.id, env(0, at=n + 1, consumed=0), n + 1)  # Keepa said 0 left, twice
    assert gov.cap == 300
    assert gov.request(Request("u9", UPSERT), 5) is None


def test_a_cap_below_sixty_refills_is_learned_from_a_repeated_ceiling():
    gov = synced(270, rate=5, recharge="off")
    for n in range(2):
        gov.sync(env(275, at=n * MINUTE, refill_in=MINUTE), n * MINUTE)
        gov.balance = 300  # the model believed in 60 x rate
        gov.request(Request(f"p{n}", PEEK), n * MINUTE)
        grant = gov.decide(n * MINUTE + 1).grants[0]
        gov.settle(grant.id, env(274, at=n * MINUTE + 2, consumed=1), n * MINUTE + 2)
    assert gov.cap == 275
