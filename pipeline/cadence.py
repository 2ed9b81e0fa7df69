"""How often the deal feed is worth reading, for this plan.

Every scan costs at least one deal page (5 tokens), even when little is new. Reading every minute
costs 5 tokens a minute: the whole 5/min plan. The interval is chosen so that page reading spends
at most ``budget_fraction`` of the refill, never more often than ``min_interval_ms``, and at least
every ``max_interval_ms`` (Keepa lists only deals updated in the last 12 hours). A scan reads as
many pages as the feed grew, so a fast feed is still read completely. When the bucket is so full
that the next refill would overflow and no other work waits to spend it, a page costs nothing that
would not be lost anyway: then the feed is read every ``min_interval_ms``.
"""

from __future__ import annotations

MINUTE_MS = 60_000


def upsert_interval_ms(*, refill_per_minute: float, page_cost: float = 5, budget_fraction: float = 0.02,
                       min_interval_ms: int = MINUTE_MS, max_interval_ms: int = 6 * 60 * MINUTE_MS,
                       balance: float | None = None, cap: float | None = None, work_pending: bool = True) -> int:
    if not 0 < budget_fraction <= 1:
        raise ValueError(f"budget_fraction must be in (0, 1], got {budget_fraction}")
    if refill_per_minute <= 0:
        return max_interval_ms
    if not work_pending and balance is not None and cap is not None and balance + refill_per_minute + page_cost > cap:
        return min_interval_ms
    interval = int(page_cost / (budget_fraction * refill_per_minute) * MINUTE_MS)
    return max(min_interval_ms, min(max_interval_ms, interval))


def scan_due(*, now_ms: int, last_scan_ms: int | None, refill_per_minute: float, page_cost: float = 5,
             budget_fraction: float = 0.02, balance: float | None = None, cap: float | None = None,
             work_pending: bool = True) -> bool:
    """Whether to start a scan of the feed now: asked by the scheduler once a minute and, on plans
    of several pages a grant, when a scan ends (see ``actors.scan.FeedScan._follow_on``)."""
    if last_scan_ms is None:
        return True
    interval = upsert_interval_ms(refill_per_minute=refill_per_minute, page_cost=page_cost,
                                  budget_fraction=budget_fraction, balance=balance, cap=cap,
                                  work_pending=work_pending)
    return now_ms - last_scan_ms >= interval
