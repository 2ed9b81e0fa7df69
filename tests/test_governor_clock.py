"""The governor decides on Keepa's clock: the host-minus-Keepa offset is measured from envelopes, and a
host clock 30 s ahead of Keepa's grants nothing Keepa refuses.

The policy runs against Keepa's own token rules (keepa_api.tokens.TokenBucket) on two injected
clocks; the shell (GovernorHost in the batch loop) runs on a real redis-server with a fake clock and
a fake Keepa whose clock is 30 s behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from actors.broker import make_broker
from actors.doorbell import Doorbell
from actors.governor_host import GovernorHost
from actors.governor_loop import GovernorLoop
from actors.ledger import Ledger, Ops
from actors.messages import MalformedMessage, to_governor
from governor.clock import WINDOW, ClockOffset
from governor.config import GovernorConfig
from governor.model import Request
from governor.policy import Governor
from keepa_api.tokens import TokenBucket
from tests.governor_rig import take

SKEW_MS = 30_000            # the host clock is this far ahead of Keepa's
COMMIT_COST = 20


def test_the_offset_is_the_smallest_recent_reading():
    clock = ClockOffset()
    assert clock.offset_ms == 0                                   # nothing measured yet
    assert clock.observe(1_030_250, 1_000_000) == 30_250
    assert clock.observe(1_090_040, 1_060_000) == 30_040          # a quicker answer: a tighter reading
    assert clock.observe(1_200_900, 1_170_000) == 30_040          # a slow one changes nothing
    for i in range(WINDOW):                                       # the host clock stepped back 10 s
        clock.observe(2_000_000 + 20_100 + i, 2_000_000 + i)
    assert clock.offset_ms == 20_100                              # old readings have left the window
    assert ClockOffset(clock.to_json()).offset_ms == 20_100       # survives the trip through JSON


def run_skewed(hours: int, *, measure: bool) -> tuple[TokenBucket, Governor]:
    """The 5/min plan from an empty bucket, with commits always waiting, the host clock SKEW_MS ahead
    of Keepa's. Each second (host clock) the governor decides; each grant is called at Keepa 50 ms
    later and settled with its envelope 120 ms after that. ``measure``: the shell's measurement
    feeds the policy; without it the policy reckons refills on the host clock (the old behaviour)."""
    host_ms = 1_700_000_000_000
    keepa = TokenBucket(5, start_tokens=0, start_ms=host_ms - SKEW_MS)
    gov, clock = Governor(GovernorConfig(recharge="off")), ClockOffset()

    def received(envelope, at_ms: int) -> None:
        offset = clock.observe(at_ms, envelope.timestamp_ms)
        if measure:
            gov.clock_offset_ms = offset

    first = keepa.envelope(host_ms - SKEW_MS)
    received(first, host_ms + 40)
    gov.sync(first, host_ms + 40)
    seq = 0
    for _ in range(hours * 3600):
        host_ms += 1000
        while gov.pending() < 5:
            seq += 1
            gov.request(Request(f"c{seq}", "commit", 1, host_ms), host_ms)
        for grant in gov.decide(host_ms).grants:
            called_at = host_ms + 50 - SKEW_MS                     # Keepa's clock
            charged = keepa.charge(COMMIT_COST, called_at)
            envelope = keepa.envelope(called_at, COMMIT_COST if charged else 0)
            received(envelope, host_ms + 170)
            gov.settle(grant.id, envelope, host_ms + 170)
    return keepa, gov


def test_a_host_clock_30_s_ahead_of_keepa_causes_no_429_once_the_offset_is_measured():
    keepa, gov = run_skewed(2, measure=True)
    assert keepa.refused_total == 0
    assert keepa.spent_total >= 0.95 * keepa.refilled_total        # and the plan is still used, not idled
    assert SKEW_MS <= gov.clock_offset_ms <= SKEW_MS + 200          # measured, never below the truth


def test_the_same_skew_without_the_measurement_grants_early_and_keepa_refuses():
    """The control: the scenario above does catch a governor that decides on the host clock."""
    keepa, _ = run_skewed(2, measure=False)
    assert keepa.refused_total > 10


# -- the shell: GovernorHost in the batch loop, on a real redis-server ---------------------------

@pytest.fixture
def skewed_loop(redis_server):
    """A governor on a host clock 30 s ahead of its fake Keepa, which answers /token with an empty
    bucket whose next refill comes 40 s after Keepa's now."""
    broker = make_broker(redis_server)
    broker.client.flushdb()
    clock = SimpleNamespace(ms=int(time.time() * 1000), skew_ms=SKEW_MS)
    keepa = TokenBucket(5, start_tokens=0, start_ms=clock.ms - SKEW_MS - 20_000)   # refill due in 40 s
    host = GovernorHost(Ledger(broker.client, holder="me"), broker, GovernorConfig(recharge="off"),
                        lambda: keepa.envelope(clock.ms - clock.skew_ms), clock_ms=lambda: clock.ms)
    stop = threading.Event()
    stop.set()
    doorbell = Doorbell(redis_server, max_wait_s=1.0)
    loop = GovernorLoop(SimpleNamespace(host=host), stop, doorbell, new_broker=lambda: make_broker(redis_server))
    yield SimpleNamespace(loop=loop, clock=clock, keepa=keepa, broker=broker)
    doorbell.close()
    broker.client.flushdb()
    broker.close()


def _commit_request(rid: str):
    return to_governor("request", {"id": rid, "cls": "commit", "units": 1})


def test_the_governor_on_a_host_clock_30_s_ahead_grants_at_keepas_refill_not_before(skewed_loop):
    s = skewed_loop
    start = s.clock.ms
    s.broker.enqueue(_commit_request("a"))
    s.loop.step()                                               # takes over: /token is its first reading
    host = s.loop.host
    assert host.gov.clock_offset_ms == SKEW_MS
    assert host.books["wake_at"] == start + 40_000               # Keepa's refill, on the host clock
    assert take(s.broker, "commit") == []

    s.clock.ms = start + 39_999                                 # on the host clock, the refill looks 10 s past
    host.finish(s.clock.ms, _no_ops())
    assert take(s.broker, "commit") == [], "granted before Keepa refilled: Keepa would answer 429"

    s.clock.ms = start + 40_000
    host.finish(s.clock.ms, _no_ops())
    assert [g.args[0] for g in take(s.broker, "commit")] == ["a"]
    assert s.keepa.charge(COMMIT_COST, s.clock.ms - SKEW_MS), "Keepa refused the grant's call"


def test_each_settle_is_a_reading_of_the_offset_taken_when_the_worker_read_the_answer(skewed_loop):
    s = skewed_loop
    s.loop.step()
    host = s.loop.host
    envelope = s.keepa.envelope(s.clock.ms - SKEW_MS).to_json()
    settle = {"grant_id": "unknown", "endpoint": "peek", "outcome": "ok", "envelope": envelope}
    host.apply("settle", {**settle, "received_ms": envelope["timestamp"] + SKEW_MS + 900}, s.clock.ms, _no_ops())
    assert host.keepa_clock.to_json() == [SKEW_MS, SKEW_MS + 900]     # the /token call, then this settle
    assert host.gov.clock_offset_ms == SKEW_MS
    host.apply("settle", {**settle, "received_ms": envelope["timestamp"] + SKEW_MS - 5}, s.clock.ms, _no_ops())
    assert host.gov.clock_offset_ms == SKEW_MS - 5                # the tighter reading wins
    with pytest.raises(MalformedMessage, match="received_ms must be an integer"):
        host.apply("settle", {**settle, "received_ms": "soon"}, s.clock.ms, _no_ops())


def test_a_governor_taking_over_measures_the_offset_afresh(skewed_loop):
    """Readings are not inherited: the host clock may have been stepped since they were taken."""
    s = skewed_loop
    s.loop.step()
    assert s.loop.host.gov.clock_offset_ms == SKEW_MS
    s.loop.host.forget()                                   # as after losing the lease, or a restart
    s.clock.skew_ms = 45_000                               # the host clock was stepped 15 s ahead since
    s.loop.step()
    assert s.loop.host.gov.clock_offset_ms == 45_000


def _no_ops() -> Ops:
    return Ops()


# -- the real stack: the embedded Keepa server's clock 30 s behind this host's -------------------

@pytest.mark.integration
def test_the_stack_on_a_host_clock_30_s_ahead_of_keepa_gets_no_429(tmp_path):
    """The embedded server stamps its envelopes (and reckons its refills) 30 s behind this host, and
    starts with an empty bucket, so every grant waits for a refill: with Keepa minutes of 0.5 s, a
    governor reckoning refills on the host clock would see 60 refills that Keepa has not made."""
    from tests.stack import ROOT, Stack, wait_for

    stack = Stack(tmp_path, epoch_ms=int(time.time() * 1000) - SKEW_MS, start_tokens=0)
    try:
        stack.start_all()
        wait_for(lambda: stack.ingested() >= 10, 120, "10 deals ingested")
        books = stack.keepa.books()
        assert books["refused_total"] == 0, books
        assert books["requests_total"].get("/product", 0) >= 2, books   # peeks and commits were made
        snap = wait_for(lambda: (s := stack.snapshot()) and s.get("keepa_clock_offset_ms") and s, 30,
                        "a snapshot with the measured offset")
        assert SKEW_MS <= snap["keepa_clock_offset_ms"] < SKEW_MS + 2_000, snap["keepa_clock_offset_ms"]
        status = subprocess.run([sys.executable, "-m", "keepa_deals.cli", "status", "--json"], cwd=ROOT,
                                env=stack.env, capture_output=True, text=True, timeout=60)
        assert SKEW_MS <= json.loads(status.stdout)["keepa_clock_offset_ms"] < SKEW_MS + 2_000, status.stdout
    finally:
        stack.close()
