"""Keepa in-process: the token bucket, costs per call, HTTP outcomes, and the synthetic feed."""

from __future__ import annotations

import random
from dataclasses import dataclass

from keepa_api.tokens import Envelope, TokenBucket
from simulator.feed import Feed
from simulator.scenario import Scenario


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    envelope: Envelope
    payload: object = None


class KeepaModel:
    def __init__(self, scenario: Scenario, feed: Feed):
        self.feed = feed
        self.bucket = TokenBucket(scenario.schedule, max_tokens=scenario.max_tokens,
                                  start_tokens=scenario.start_tokens)
        self.page_cost = scenario.deal_page_cost
        self.error_rate = scenario.error_rate
        self.rogue_per_minute = scenario.rogue_tokens_per_minute
        self._rng = random.Random(scenario.seed ^ 0x5EED)
        self.token_status_calls = 0
        self.http_429s = 0
        self.http_500s = 0
        self.rogue_spent = 0
        self.rogue_refused = 0

    def _answer(self, cost: int, now_ms: int, payload) -> Response:
        bucket = self.bucket
        if self.error_rate and self._rng.random() < self.error_rate:
            self.http_500s += 1
            return Response(500, bucket.envelope(now_ms, 0))
        if not bucket.charge(cost, now_ms):
            self.http_429s += 1
            return Response(429, bucket.envelope(now_ms, 0))
        return Response(200, bucket.envelope(now_ms, cost), payload)

    def deal_page(self, page: int, now_ms: int, filtered: bool = False) -> Response:
        """One ``/deal`` page; ``filtered``: the query carries the rule's ranges
        (:func:`pipeline.screen.selection_ranges`), so the page lists only deals that pass them."""
        low, high = self.page_cost
        cost = low if low == high else self._rng.randint(low, high)
        return self._answer(cost, now_ms, self.feed.page(page, now_ms, filtered))

    def peek(self, indexes: tuple, now_ms: int) -> Response:
        cost = sum(self.feed.peek_cost[i] for i in indexes)
        return self._answer(cost, now_ms, [self.feed.stats(i) for i in indexes])

    def commit(self, indexes: tuple, now_ms: int) -> Response:
        cost = sum(self.feed.commit_cost[i] for i in indexes)
        return self._answer(cost, now_ms, [self.feed.stats(i) for i in indexes])

    def token(self, now_ms: int) -> Envelope:
        self.token_status_calls += 1
        return self.bucket.envelope(now_ms, 0)

    def rogue(self, now_ms: int) -> int | None:
        """One call of the other client on the key: ``None`` if Keepa took it, else the ``refillIn``
        of its 429 (the client then waits that long plus 100 ms and tries again)."""
        if self.bucket.charge(self.rogue_per_minute, now_ms):
            self.rogue_spent += self.rogue_per_minute
            return None
        self.rogue_refused += 1
        return self.bucket.refill_in_ms(now_ms)
