"""The most deals any policy could ingest in a scenario: the yardstick the benchmark compares with.

The bound is the smaller of what the feed supplies (viable deals not already stored that appear
during the run) and what the tokens buy: every token the plan credits over the run (plus the
starting balance, less tokens a rogue consumer takes), less the deal pages needed to read the feed
once, divided by what one ingested deal costs (a commit, plus the peeks spent to find one viable
candidate).
"""

from __future__ import annotations

from math import ceil

from pipeline.watermark import PAGE_SIZE
from simulator.feed import Feed
from simulator.scenario import Scenario


def mean(cost: tuple[int, int]) -> float:
    return (cost[0] + cost[1]) / 2


def ingest_bound(scenario: Scenario) -> dict:
    feed = Feed(scenario)
    supply = sum(1 for known, viable in zip(feed.known, feed.viable, strict=True) if viable and not known)
    schedule = scenario.schedule
    credited = sum(schedule.rate_at(m) for m in range(scenario.minutes))
    tokens = scenario.start_tokens + credited - scenario.rogue_tokens_per_minute * scenario.minutes
    pages = ceil(len(feed) / PAGE_SIZE) * mean(scenario.deal_page_cost)
    if scenario.viable_fraction > 0:
        per_deal = mean(scenario.commit_cost) + mean(scenario.peek_cost) / scenario.viable_fraction
        buy = max(0.0, (tokens - pages) / per_deal)
    else:
        buy = 0.0
    return {"supply": supply, "tokens_buy": round(buy, 1), "bound": round(min(supply, buy), 1)}
