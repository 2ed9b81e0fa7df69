"""The governor says why each pending request waits, in numbers, and when it should be granted."""

from governor.explain import explain
from governor.model import COMMIT, PEEK, UPSERT, Request
from governor.policy import Governor
from tests.test_governor_policy import MINUTE, env, synced


def why(gov, now_ms=0):
    return {e.request_id: e for e in explain(gov, now_ms)}


def test_before_the_first_envelope_it_says_so_and_promises_no_time():
    gov = Governor()
    gov.request(Request("u1", UPSERT), 0)
    (only,) = explain(gov, 0)
    assert "first token envelope" in only.reason and only.eta_ms is None


def test_below_the_floor_it_names_the_balance_and_the_refill_and_the_eta_comes_true():
    gov = synced(15, recharge="off")
    for n in range(2):
        gov.request(Request(f"c{n}", COMMIT), 0)
    (granted,) = gov.decide(0).grants            # c0 takes the balance to -5
    gov.settle(granted.id, env(-5, consumed=20), 0)
    waiting = why(gov)["c1"]
    assert "balance -5" in waiting.reason and "floor 0" in waiting.reason
    assert f"next refill +5 at {MINUTE} ms" in waiting.reason
    # the projection at the plan's rate: -5 -> 0 -> 5, granted at the second refill
    assert waiting.eta_ms == 2 * MINUTE
    # and so it happens when the refills come as reported and nothing else arrives
    balance, granted_at = -5, None
    for minute in range(1, 4):
        balance += 5
        gov.sync(env(balance, at=minute * MINUTE), minute * MINUTE)
        if gov.decide(minute * MINUTE).grants:
            granted_at = minute * MINUTE
            break
    assert granted_at == waiting.eta_ms


def test_peeks_held_by_backpressure_name_the_calls_that_fill_the_buffer():
    gov = synced(300, rate=100, recharge="off", peek_buffer=2)
    for n in range(3):
        gov.request(Request(f"p{n}", PEEK), 0)
    assert [g.id for g in gov.decide(0).grants] == ["p0", "p1"]
    reason = why(gov)["p2"].reason
    assert "backpressure: 0 commit requests wait and 2 peek calls are in flight (buffer 2 calls)" in reason
    assert "balance" not in reason   # tokens are there: the buffer alone holds it


def test_a_request_behind_others_names_its_place_and_the_classes_before_it():
    gov = synced(0, recharge="off")
    gov.request(Request("u1", UPSERT), 0)
    for n in range(3):
        gov.request(Request(f"p{n}", PEEK), 0)
    reasons = why(gov)
    assert "2 peek request(s) ahead in its own queue" in reasons["p2"].reason
    assert "higher priority waiting: 1 upsert" in reasons["p2"].reason
    assert "higher priority" not in reasons["u1"].reason
    # granted in order as the refills come: the upsert first, then the peeks one by one
    assert reasons["u1"].eta_ms <= reasons["p0"].eta_ms <= reasons["p1"].eta_ms <= reasons["p2"].eta_ms


def test_during_a_recharge_it_names_the_mark_it_waits_for_and_its_deadline():
    gov = synced(10, recharge="on")
    gov.request(Request("c1", COMMIT), 0)
    gov.decide(0)
    reason = why(gov)["c1"].reason
    assert reason.startswith("recharge: balance 10 rising to ")
    assert "ends by " in reason
