"""Stage 0, the screen: judge a feed deal on its own numbers before any token is spent on it.

A ``/deal`` record already carries the three numbers the peek verdict reads: the NEW price
(``current[1]``), its 90-day average (``avg[3][1]``, the first index being the date range: 0 day,
1 week, 2 month, 3 ninety days) and the sales rank (``current[3]``). So the verdict's own rule,
applied to the deal record, sets aside most deals for free; the peek stays as the confirmation with
fresh stats, because a feed record can be hours old.

Keepa can apply the same rule to the deal query itself (``isRangeEnabled`` with ``currentRange``,
``deltaPercentRange`` and ``salesRankRange``), so a feed page of 150 deals (5 tokens) carries only
deals that might pass. :func:`selection_ranges` gives those fields within Keepa's limits.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.verdict import NO_DATA, PeekStats, Verdict, ViabilityRule, peek_verdict

NEW, SALES_RANK = 1, 3          # price-type indexes of current[] and of an avg row
NINETY_DAYS = 3                 # the date-range index of avg[] for the 90-day average
MIN_DELTA_PERCENT = 10          # Keepa refuses a deltaPercentRange minimum below 10 (80 for sales rank)
MAX_INT = 2**31 - 1             # Keepa's ranges are Java ints
DEFAULT_RULE = ViabilityRule()


def deal_stats(current: Sequence[int], avg: Sequence[Sequence[int]]) -> PeekStats:
    """The verdict's numbers as a feed deal carries them; -1 where the deal has none."""

    def at(values: Sequence[int], index: int) -> int:
        return values[index] if len(values) > index else NO_DATA

    avg90 = avg[NINETY_DAYS] if len(avg) > NINETY_DAYS else ()
    return PeekStats(price_new=at(current, NEW), avg90_new=at(avg90, NEW), sales_rank=at(current, SALES_RANK))


def screen(current: Sequence[int], avg: Sequence[Sequence[int]], rule: ViabilityRule = DEFAULT_RULE) -> Verdict:
    """The peek verdict applied to a feed deal's own numbers: ``viable`` means "worth a peek"."""
    return peek_verdict(deal_stats(current, avg), rule)


def selection_ranges(rule: ViabilityRule = DEFAULT_RULE) -> dict:
    """The deal-query fields that make Keepa apply ``rule`` before it pages the feed.

    The query must then ask for the NEW price type and the 90-day date range, so that
    ``deltaPercent`` is computed against the average the rule reads. Keepa's ``deltaPercentRange`` is
    an integer percent with a minimum of 10: a rule asking for less is screened on our side only
    (the range then starts at 10 and would drop deals the rule keeps, so it is left out).
    """
    fields: dict = {
        "isRangeEnabled": True,
        "priceTypes": [NEW],
        "dateRange": NINETY_DAYS,
        "currentRange": [max(rule.min_price, 1), MAX_INT],
        "salesRankRange": [0, rule.max_sales_rank],
    }
    drop = int(rule.min_drop_percent)           # floor: never stricter than the rule
    if drop >= MIN_DELTA_PERCENT:
        fields["deltaPercentRange"] = [drop, 100]
    return fields
