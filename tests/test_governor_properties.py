"""Property tests: the governor's invariants over random request streams against Keepa's rules.

Each case drives one Governor against one TokenBucket (Keepa) on a virtual clock: requests arrive
at random times in random classes, every grant runs its call against the bucket at once and
settles with the envelope Keepa returned.
"""

import heapq
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from governor.config import GovernorConfig
from governor.model import CLASSES, COMMIT, PEEK, UPSERT, Request
from governor.policy import Governor
from keepa_api.tokens import TokenBucket

COST = {UPSERT: (5, 5), PEEK: (1, 2), COMMIT: (12, 20)}
HORIZON_MS = 48 * 3_600_000

arrival = st.tuples(st.integers(0, 3 * 3_600_000), st.sampled_from(CLASSES), st.integers(1, 3))
plans = st.sampled_from([(5, 0), (5, 300), (5, -200), (20, 0), (20, 1200), (60, -500), (300, 0)])


class Run:
    def __init__(self, rate, start, arrivals, seed, recharge="auto", duplicate=False):
        self.bucket = TokenBucket(rate, start_tokens=start)
        self.gov = Governor(GovernorConfig(recharge=recharge))
        self.rng = random.Random(seed)
        self.duplicate = duplicate
        self.arrivals = sorted(arrivals)
        self.lost_while_waiting = 0
        self.refused = 0
        self.min_balance = start
        self.granted, self.rejected = [], []
        self.largest = 0

    def _send(self, message, *args):
        result = message(*args)
        if self.duplicate:
            message(*args)
        return result

    def play(self):
        gov, bucket = self.gov, self.bucket
        gov.sync(bucket.envelope(0), 0)
        queue = [(t, 1, i) for i, (t, _, _) in enumerate(self.arrivals)]
        heapq.heapify(queue)
        now, wake = 0, None
        while now <= HORIZON_MS:
            candidates = [bucket.next_refill_ms]
            if queue:
                candidates.append(queue[0][0])
            if wake is not None and wake > now:
                candidates.append(wake)
            now = min(candidates)
            if now == bucket.next_refill_ms:
                overflow = bucket.balance + bucket.rate - bucket.cap
                if overflow > 0 and gov.pending():
                    self.lost_while_waiting += overflow
                bucket.refill_once()
            while queue and queue[0][0] <= now:
                _, _, i = heapq.heappop(queue)
                t, cls, units = self.arrivals[i]
                rejection = self._send(gov.request, Request(f"r{i}", cls, units, t), now)
                if rejection:
                    self.rejected.append(rejection)
            decision = gov.decide(now)
            self.rejected.extend(decision.rejections)
            for grant in decision.grants:
                self._call(grant, now)
            wake = decision.wake_at_ms
            if not queue and not gov.pending() and not gov.in_flight:
                break
        return self

    def _call(self, grant, now):
        """One call, or for an upsert of several pages one call a page, all at once."""
        low, high = COST[grant.request.cls]
        units = grant.request.units
        costs = [self.rng.randint(low, high) for _ in range(units)]
        calls = costs if grant.request.cls == UPSERT else [sum(costs)]
        charged = 0
        for cost in calls:
            if not self.bucket.charge(cost, now):
                self.refused += 1
                continue
            charged += cost
            self.largest = max(self.largest, cost)
            self.min_balance = min(self.min_balance, self.bucket.balance)
        self.granted.append((grant.id, now))
        self._send(self.gov.settle, grant.id, self.bucket.envelope(now, charged), now)


@settings(max_examples=150, deadline=None)
@given(plan=plans, arrivals=st.lists(arrival, max_size=60), seed=st.integers(0, 10**6))
def test_invariants_hold_for_any_request_stream(plan, arrivals, seed):
    rate, start = plan
    run = Run(rate, start, arrivals, seed).play()
    # no grant at a balance <= floor: Keepa never refused a granted call
    assert run.refused == 0
    # no token lost at the cap while anything waited
    assert run.lost_while_waiting == 0
    # the balance never went below one call's cost (or the start, if that was lower)
    assert run.min_balance >= min(-run.largest, start)
    # every request was granted or rejected with a reason, none left waiting
    assert len(run.granted) + len(run.rejected) == len(arrivals)
    assert all(r.reason for r in run.rejected)
    assert run.gov.pending() == 0


@settings(max_examples=80, deadline=None)
@given(plan=plans, arrivals=st.lists(arrival, max_size=40), seed=st.integers(0, 10**6))
def test_repeated_messages_change_nothing(plan, arrivals, seed):
    rate, start = plan
    once = Run(rate, start, arrivals, seed).play()
    twice = Run(rate, start, arrivals, seed, duplicate=True).play()
    assert twice.granted == once.granted
    assert twice.gov.balance == once.gov.balance
    assert twice.gov.tokens_by_class == once.gov.tokens_by_class


@settings(max_examples=60, deadline=None)
@given(arrivals=st.lists(arrival, min_size=1, max_size=60), seed=st.integers(0, 10**6))
def test_no_class_starves_under_a_flood_of_the_others(arrivals, seed):
    # a steady flood of commits and peeks plus the random stream: upserts are still granted
    flood = [(t, cls, 1) for t in range(0, 3 * 3_600_000, 60_000) for cls in (COMMIT, PEEK)]
    run = Run(5, 0, flood + arrivals, seed, recharge="off").play()
    granted = {gid for gid, _ in run.granted}
    ups = [f"r{i}" for i, (_, cls, _) in enumerate(sorted(flood + arrivals)) if cls == UPSERT]
    assert all(u in granted for u in ups)
