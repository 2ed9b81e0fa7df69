"""The most deals any policy could ingest in a scenario: the yardstick the benchmark compares with.

The bound is the smaller of two numbers:

- what the feed can show: the viable deals not already stored that a query filtered by the rule lists
  during the run (of the backlog at minute 0 only the newest 10,000, Keepa's limit; every deal that
  appears later);
- what the tokens buy: every token the plan credits over the run (plus the starting balance, less
  what a rogue consumer takes), divided by what one ingested deal costs at best: its commit, the
  peeks spent to find one viable deal among those that pass the screen, and its share of the feed
  pages of a server-filtered feed (150 deals a page, of which the viable, unknown ones).

A failed call (HTTP 500) costs no token, only time, so errors leave the bound as it is, except that
a Keepa that fails every call (``error_rate`` 1) lets nothing through: the bound is then 0.
"""

from __future__ import annotations

from bisect import bisect_right

from pipeline.watermark import PAGE_SIZE
from simulator.feed import KEEPA_DEAL_LIMIT, Feed
from simulator.scenario import Scenario


def mean(cost: tuple[int, int]) -> float:
    return (cost[0] + cost[1]) / 2


def ingest_bound(scenario: Scenario) -> dict:
    feed = Feed(scenario)
    passing = feed.passing
    backlog = bisect_right(feed.passing_times, 0)  # listed by the filtered query at minute 0
    hidden = max(0, backlog - KEEPA_DEAL_LIMIT)    # the oldest of them are never visible
    supply = sum(1 for i in passing[hidden:] if feed.viable[i] and not feed.known[i])
    schedule = scenario.schedule
    credited = sum(schedule.rate_at(m) for m in range(scenario.minutes))
    tokens = scenario.start_tokens + credited - scenario.rogue_tokens_per_minute * scenario.minutes
    viable, unknown = scenario.viable_fraction, 1 - scenario.known_fraction
    if viable > 0 and unknown > 0:
        per_deal = (mean(scenario.commit_cost) + mean(scenario.peek_cost) / viable
                    + mean(scenario.deal_page_cost) / (PAGE_SIZE * viable * unknown))
        buy = max(0.0, tokens / per_deal)
    else:
        buy = 0.0
    if scenario.error_rate >= 1:
        supply, buy = 0, 0.0
    return {"supply": supply, "tokens_buy": round(buy, 1), "bound": round(min(supply, buy), 1)}
