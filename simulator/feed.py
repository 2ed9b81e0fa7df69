"""A deterministic synthetic deal feed: a backlog at minute 0 and new deals arriving over time.

Everything derives from the scenario's seed. Deal ``i`` has a time, and whether it is already known,
whether it is viable, and what its peek and commit cost at Keepa. Pages are served newest first,
150 deals a page, with ``order_noise`` of a page's deals out of place inside the page.
"""

from __future__ import annotations

import random
from bisect import bisect_right

from pipeline.verdict import PeekStats
from pipeline.watermark import PAGE_SIZE
from simulator.scenario import Scenario

BACKLOG_SPAN_MS = 12 * 3_600_000
_ASIN = "B{:09d}"
KEEPA_DEAL_LIMIT = 10_000


class Feed:
    def __init__(self, scenario: Scenario):
        rng = random.Random(scenario.seed)
        self.seed = scenario.seed
        self.order_noise = scenario.order_noise
        times = sorted(-rng.randrange(1, BACKLOG_SPAN_MS) for _ in range(scenario.backlog))
        if scenario.new_per_hour > 0:
            mean_gap_ms = 3_600_000 / scenario.new_per_hour
            t, end = 0.0, scenario.minutes * 60_000
            while True:
                t += rng.expovariate(1.0) * mean_gap_ms
                if t >= end:
                    break
                times.append(int(t))
        self.times = times
        n = len(times)
        self.known = [rng.random() < scenario.known_fraction for _ in range(n)]
        self.viable = [rng.random() < scenario.viable_fraction for _ in range(n)]
        self.peek_cost = _draws(rng, scenario.peek_cost, n)
        self.commit_cost = _draws(rng, scenario.commit_cost, n)

    def __len__(self) -> int:
        return len(self.times)

    @staticmethod
    def asin(index: int) -> str:
        return _ASIN.format(index)

    @staticmethod
    def index(asin: str) -> int:
        return int(asin[1:])

    def visible(self, now_ms: int) -> int:
        return bisect_right(self.times, now_ms)

    def page(self, page: int, now_ms: int) -> list[int]:
        """Deal indexes on ``page`` at ``now_ms``, newest first (noise inside the page). Like Keepa,
        only the newest 10,000 deals can be paged to."""
        if page * PAGE_SIZE >= KEEPA_DEAL_LIMIT:
            return []
        top = self.visible(now_ms) - page * PAGE_SIZE
        if top <= 0:
            return []
        size = min(PAGE_SIZE, KEEPA_DEAL_LIMIT - page * PAGE_SIZE)
        indexes = list(range(top - 1, max(-1, top - 1 - size), -1))
        if self.order_noise and len(indexes) > 1:
            rng = random.Random(self.seed * 1_000_003 + page * 7919 + now_ms)
            for i in range(len(indexes)):
                if rng.random() < self.order_noise:
                    j = rng.randrange(len(indexes))
                    indexes[i], indexes[j] = indexes[j], indexes[i]
        return indexes

    def stats(self, index: int) -> PeekStats:
        """Product stats that pass the default viability rule exactly when the deal is viable."""
        if self.viable[index]:
            return PeekStats(price_new=2_000 + index % 500, avg90_new=3_200, sales_rank=1_000 + index % 90_000)
        if index % 2:
            return PeekStats(price_new=2_900, avg90_new=3_000, sales_rank=5_000)
        return PeekStats(price_new=-1, avg90_new=3_000, sales_rank=-1)


def _draws(rng: random.Random, cost: tuple[int, int], n: int) -> list[int]:
    low, high = cost
    if low == high:
        return [low] * n
    return [rng.randint(low, high) for _ in range(n)]
