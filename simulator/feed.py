"""A deterministic synthetic deal feed: a backlog at minute 0 and new deals arriving over time.

Everything derives from the scenario's seed. Deal ``i`` has a time, and whether it is already known,
whether its own feed numbers pass the viability rule (``screen_pass``), whether its fresh stats do
(``viable``: only a deal that passes the screen can be viable, so a deal may pass the screen and fail
the peek, as a feed record hours old does), and what its peek and commit cost at Keepa. Pages are
served newest first, 150 deals a page, with ``order_noise`` of a page's deals out of place inside the
page; a query carrying the rule's ranges (``filtered``) pages only the deals that pass the screen.
"""

from __future__ import annotations

import random
from bisect import bisect_right

from pipeline.screen import NEW, NINETY_DAYS, SALES_RANK
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
        # drawn from a stream of its own, so a scenario without a screen keeps its deals as before
        passing = scenario.screen_pass_fraction
        if passing >= 1:
            self.screen_pass = [True] * n
            self.passing = list(range(n))
        else:
            screen_rng = random.Random(scenario.seed * 2_654_435_761 + 12)
            self.screen_pass = [screen_rng.random() < passing for _ in range(n)]
            self.viable = [v and p for v, p in zip(self.viable, self.screen_pass, strict=True)]
            self.passing = [i for i, p in enumerate(self.screen_pass) if p]
        self.passing_times = [times[i] for i in self.passing]

    def __len__(self) -> int:
        return len(self.times)

    @staticmethod
    def asin(index: int) -> str:
        return _ASIN.format(index)

    @staticmethod
    def index(asin: str) -> int:
        return int(asin[1:])

    def visible(self, now_ms: int, filtered: bool = False) -> int:
        """How many deals the query lists at ``now_ms`` (before Keepa's 10,000 limit)."""
        return bisect_right(self.passing_times if filtered else self.times, now_ms)

    def page(self, page: int, now_ms: int, filtered: bool = False) -> list[int]:
        """Deal indexes on ``page`` at ``now_ms``, newest first (noise inside the page). Like Keepa,
        only the newest 10,000 deals of the query can be paged to; ``filtered``: the query carries
        the rule's ranges, so only deals that pass the screen are listed."""
        if page * PAGE_SIZE >= KEEPA_DEAL_LIMIT:
            return []
        top = self.visible(now_ms, filtered) - page * PAGE_SIZE
        if top <= 0:
            return []
        size = min(PAGE_SIZE, KEEPA_DEAL_LIMIT - page * PAGE_SIZE)
        indexes = list(range(top - 1, max(-1, top - 1 - size), -1))
        if filtered and len(self.passing) < len(self.times):
            indexes = [self.passing[i] for i in indexes]
        if self.order_noise and len(indexes) > 1:
            rng = random.Random(self.seed * 1_000_003 + page * 7919 + now_ms)
            for i in range(len(indexes)):
                if rng.random() < self.order_noise:
                    j = rng.randrange(len(indexes))
                    indexes[i], indexes[j] = indexes[j], indexes[i]
        return indexes

    def deal_numbers(self, index: int) -> tuple[list[int], list[list[int]]]:
        """The deal record's ``current[]`` and ``avg[][]`` as Keepa lists them: they pass the default
        rule exactly when the deal passes the screen (a 37.5 % drop, a ranked product), else they
        show a 3 % drop."""
        current = [-1] * 4
        avg = [[-1] * 4 for _ in range(NINETY_DAYS + 1)]
        avg[NINETY_DAYS][NEW] = 3_200 if self.screen_pass[index] else 3_000
        current[NEW] = 2_000 if self.screen_pass[index] else 2_910
        current[SALES_RANK] = 1_000 + index % 90_000
        return current, avg

    def stats(self, index: int) -> PeekStats:
        """Fresh product stats (a peek's or a commit's): they pass the default viability rule exactly
        when the deal is viable; a deal that passed the screen and is not viable any more has a price
        that rose since its feed record."""
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
