"""What a simulation measures, and the report (docs/scenarios.md) it prints."""

from __future__ import annotations

from governor.model import CLASSES


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))
    return ordered[rank]


class RunStats:
    def __init__(self, start_tokens: int):
        self.start_tokens = start_tokens
        self.requests = dict.fromkeys(CLASSES, 0)
        self.queued_max = dict.fromkeys(CLASSES, 0)  # most requests of a class pending at once
        self.grants = dict.fromkeys(CLASSES, 0)
        self.tokens = dict.fromkeys(CLASSES, 0)
        self.waits_ms = {c: [] for c in CLASSES}
        self.rejections: dict[str, list[str]] = {c: [] for c in CLASSES}
        self.lost_while_waiting = 0
        self.min_balance = start_tokens
        self.largest_call = 0
        self.fresh_ms: list[int] = []
        self.asins_peeked = 0
        self.asins_committed = 0
        self.lost_in_memory = 0
        self.errors: dict[int, int] = {}
        self.restarts = 0
        self._stall_from: int | None = None
        self.longest_stall_ms = 0

    # -- hooks the simulation calls -------------------------------------------------------------
    def on_refill(self, lost: int, waiting: bool, balance: int) -> None:
        if lost and waiting:
            self.lost_while_waiting += lost

    def on_balance(self, balance: int) -> None:
        if balance < self.min_balance:
            self.min_balance = balance

    def on_request(self, cls: str, pending: int = 1) -> None:
        """A request of ``cls`` was made; ``pending`` of its class wait now, itself included."""
        self.requests[cls] += 1
        if pending > self.queued_max[cls]:
            self.queued_max[cls] = pending

    def on_reject(self, cls: str, reason: str) -> None:
        self.rejections[cls].append(reason)

    def on_grant(self, cls: str, wait_ms: int, now_ms: int) -> None:
        self.grants[cls] += 1
        self.waits_ms[cls].append(wait_ms)
        self._close_stall(now_ms)

    def on_call(self, cls: str, consumed: int, largest: int | None = None) -> None:
        """A grant's calls charged ``consumed`` in all, ``largest`` the most of them (default: one call)."""
        self.tokens[cls] += consumed
        self.largest_call = max(self.largest_call, consumed if largest is None else largest)

    def on_waiting(self, now_ms: int) -> None:
        if self._stall_from is None:
            self._stall_from = now_ms

    def on_idle(self, now_ms: int) -> None:
        self._close_stall(now_ms)

    def on_fresh(self, age_ms: int) -> None:
        self.fresh_ms.append(age_ms)

    def on_error(self, status: int) -> None:
        self.errors[status] = self.errors.get(status, 0) + 1

    def health(self, sim) -> str:
        """One line an operator can act on: "ok", or what is wrong in numbers."""
        calls = sum(self.grants.values())
        errors = sum(self.errors.values())
        ingested = sim.store.deals_ingested()
        if calls and errors * 2 > calls:
            worst = max(self.errors, key=self.errors.get)
            return (f"failing: {errors} of {calls} calls answered with an error "
                    f"(mostly HTTP {worst}); {ingested} deals ingested")
        pending = sum(self.requests.values()) - calls - sum(len(r) for r in self.rejections.values())
        if ingested == 0 and (pending > 0 or sim.store.candidates_waiting()):
            return (f"stalled: {pending} requests waiting, {sim.store.candidates_waiting()} candidates queued, "
                    f"0 deals ingested in {sim.sc.minutes} minutes")
        return "ok"

    def _close_stall(self, now_ms: int) -> None:
        if self._stall_from is not None:
            self.longest_stall_ms = max(self.longest_stall_ms, now_ms - self._stall_from)
            self._stall_from = None

    # -- the report -----------------------------------------------------------------------------
    def report(self, sim, *, wall_s: float) -> dict:
        self._close_stall(sim.end)
        bucket, keepa, policy = sim.keepa.bucket, sim.keepa, sim.policy
        recharge = getattr(policy, "recharge", None)
        by_class = {}
        for cls in CLASSES:
            waits = self.waits_ms[cls]
            by_class[cls] = {
                "requests": self.requests[cls],
                "grants": self.grants[cls],
                "tokens": self.tokens[cls],
                "wait_p50_s": round(percentile(waits, 50) / 1000, 3),
                "wait_p99_s": round(percentile(waits, 99) / 1000, 3),
                "wait_max_s": round(max(waits, default=0) / 1000, 3),
                "wait_total_s": round(sum(waits) / 1000, 1),
                "rejected": len(self.rejections[cls]),
                "queued_max": self.queued_max[cls],
            }
        ingested = sim.store.deals_ingested()
        queued = set(sim.store.candidates)
        pages_used = pages_pending = 0
        for news in sim.page_news:
            waiting = sum(1 for i in news if sim.feed.asin(i) in queued)
            pages_used += waiting < len(news)
            pages_pending += 0 < waiting == len(news)
        return {
            "scenario": sim.sc.name,
            "policy": policy.name,
            "minutes": sim.sc.minutes,
            "tokens_start": bucket.start_tokens,
            "tokens_refilled": bucket.refilled_total,
            "tokens_spent": bucket.spent_total,
            "tokens_lost_at_cap": bucket.lost_at_cap_total,
            "tokens_lost_at_cap_while_waiting": self.lost_while_waiting,
            "min_balance": self.min_balance,
            "final_balance": bucket.balance,
            "deals_seen": sim.store.deals_stored(),
            "asins_peeked": self.asins_peeked,
            "asins_committed": self.asins_committed,
            "deals_screened_out": sim.store.deals_screened_out(),
            "deals_ingested": ingested,
            "tokens_per_deal": round(bucket.spent_total / ingested, 2) if ingested else None,
            "pages_bought": sim.pages_bought,
            "scans": sim.scans,
            "pages_unused": sim.pages_bought - pages_used - pages_pending,
            "pages_pending": pages_pending,
            "by_class": by_class,
            "longest_stall_minutes": round(self.longest_stall_ms / 60_000, 2),
            "feed_freshness_p99_s": round(percentile(self.fresh_ms, 99) / 1000, 1),
            "recharge_minutes": round(recharge.active_ms(sim.end) / 60_000, 1) if recharge else 0.0,
            "token_status_calls": keepa.token_status_calls,
            "http_429s": keepa.http_429s,
            "http_500s": keepa.http_500s,
            "restarts": self.restarts,
            "commits_lost_in_memory": self.lost_in_memory,
            "rogue_tokens_spent": keepa.rogue_spent,
            "rogue_calls_refused": keepa.rogue_refused,
            "largest_call_cost": self.largest_call,
            "largest_granted_cost": max((max(c) for c in (sim.feed.commit_cost, sim.feed.peek_cost) if c),
                                        default=0),
            "rejections": sorted({r for reasons in self.rejections.values() for r in reasons})[:5],
            "health": self.health(sim),
            "wall_seconds": round(wall_s, 3),
        }
