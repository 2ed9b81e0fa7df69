"""The peek verdict: from cheap product stats, is this candidate worth a full (commit) fetch?

A peek costs about 1 token, a commit 12-20: deciding on the peek keeps rejection cheap (seed
2026-02-07: rejecting by full fetch cost 20 tokens a deal, 0.25 deals a minute on 5 tokens a minute).
"""

from __future__ import annotations

from dataclasses import dataclass

NO_DATA = -1


@dataclass(frozen=True, slots=True)
class PeekStats:
    """The few numbers the verdict reads (smallest currency unit; -1 = no data)."""

    price_new: int
    avg90_new: int
    sales_rank: int


@dataclass(frozen=True)
class ViabilityRule:
    min_drop_percent: float = 20.0
    max_sales_rank: int = 200_000
    min_price: int = 500

    def __post_init__(self):
        if not 0 <= self.min_drop_percent < 100:
            raise ValueError(f"min_drop_percent must be in [0, 100), got {self.min_drop_percent}")
        if self.max_sales_rank <= 0 or self.min_price < 0:
            raise ValueError("max_sales_rank must be positive and min_price >= 0")


@dataclass(frozen=True, slots=True)
class Verdict:
    viable: bool
    reason: str


def drop_percent(stats: PeekStats) -> float | None:
    if stats.price_new <= 0 or stats.avg90_new <= 0:
        return None
    return 100.0 * (stats.avg90_new - stats.price_new) / stats.avg90_new


def peek_verdict(stats: PeekStats, rule: ViabilityRule = ViabilityRule()) -> Verdict:
    if stats.price_new == NO_DATA or stats.price_new < rule.min_price:
        return Verdict(False, f"no new offer at or above {rule.min_price} (price {stats.price_new})")
    drop = drop_percent(stats)
    if drop is None:
        return Verdict(False, "no 90-day average to compare with")
    if drop < rule.min_drop_percent:
        return Verdict(False, f"drop {drop:.1f}% below the {rule.min_drop_percent:.1f}% rule")
    if stats.sales_rank == NO_DATA or stats.sales_rank > rule.max_sales_rank:
        return Verdict(False, f"sales rank {stats.sales_rank} outside 1..{rule.max_sales_rank}")
    return Verdict(True, f"drop {drop:.1f}%, sales rank {stats.sales_rank}")
