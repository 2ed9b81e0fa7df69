"""The commit step: a full product becomes the stored, visible deal."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.verdict import PeekStats, drop_percent


@dataclass(frozen=True, slots=True)
class DealRecord:
    asin: str
    title: str
    price_new: int
    avg90_new: int
    drop_percent: float
    sales_rank: int
    offers: int
    deal_time_ms: int
    committed_ms: int


def commit_record(*, asin: str, title: str, stats: PeekStats, offers: int, deal_time_ms: int,
                  now_ms: int) -> DealRecord:
    """Build the stored deal; raise ValueError naming the field if the product cannot make one."""
    if not asin:
        raise ValueError("commit needs an ASIN")
    drop = drop_percent(stats)
    if drop is None:
        raise ValueError(f"product {asin} has no price or 90-day average to make a deal from")
    if offers < 0:
        raise ValueError(f"product {asin} reports a negative offer count {offers}")
    return DealRecord(asin=asin, title=title, price_new=stats.price_new, avg90_new=stats.avg90_new,
                      drop_percent=round(drop, 2), sales_rank=stats.sales_rank, offers=offers,
                      deal_time_ms=deal_time_ms, committed_ms=now_ms)
