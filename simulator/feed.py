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
        # Attributes are spread evenly along the feed (low-discrepancy sequences from seeded offsets),
        # not drawn independently: any run of deals holds its fraction of viable ones to within one,
        # so two policies that peek different deals still find viable deals at the same rate, and the
        # benchmark compares policies rather than the luck of the draw (independent draws made
        # the governor-to-fifo ratio of one scenario swing by +-2 % from seed to seed).
        self.known = _spread(rng.random(), _SQRT2, scenario.known_fraction, n)
        self.screen_pass = _spread(rng.random(), _SQRT3, scenario.screen_pass_fraction, n)
        self.passing = [i for i, p in enumerate(self.screen_pass) if p] if len(self.screen_pass) else []
        self.viable = [False] * n
        for k, hit in enumerate(_spread(rng.random(), _GOLDEN, scenario.viable_fraction, len(self.passing))):
            if hit:
                self.viable[self.passing[k]] = True
        self.peek_cost = _costs(rng.random(), _SQRT5, scenario.peek_cost, n)
        self.commit_cost = _costs(rng.random(), _SQRT7, scenario.commit_cost, n)
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


_GOLDEN, _SQRT2, _SQRT3, _SQRT5, _SQRT7 = 0.6180339887498949, 0.4142135623730951, 0.7320508075688772, \
    0.2360679774997898, 0.6457513110645907  # fractional parts of rationally independent irrationals


def _spread(offset: float, step: float, fraction: float, n: int) -> list[bool]:
    """``n`` flags, ``fraction`` of them set, evenly spread: flag i is set when the fractional part
    of ``offset + i * step`` is below ``fraction``."""
    if fraction >= 1:
        return [True] * n
    return [(offset + i * step) % 1.0 < fraction for i in range(n)]


def _costs(offset: float, step: float, cost: tuple[int, int], n: int) -> list[int]:
    """``n`` costs spread evenly over the integers of ``[low, high]``."""
    low, high = cost
    if low == high:
        return [low] * n
    width = high - low + 1
    return [low + int((offset + i * step) % 1.0 * width) for i in range(n)]
