"""The governor's state as one JSON-ready dict: what ``status``, the metrics exporter and an
operator at night read. Written to Redis by the governor actor after every decision.

Schema (version 1) -- keep it stable, add fields only:

    version, updated_ms, synced, balance, refill_rate, cap, next_refill_ms,
    recharge: {enabled, active, since_ms, exit_by_ms, low, high, entries_total, timeouts_total},
    pending: {upsert, commit, peek}, in_flight: {upsert, commit, peek},
    grants_total: {cls}, tokens_consumed_total: {cls},
    wait_seconds: {cls: {buckets: [[le_s, cumulative_count], ...], sum_s, count}},
    lost_at_cap_while_waiting_total, external_tokens_total, rejections_total,
    last_grant_ms, explanations: [{request_id, cls, position, reason, eta_ms}]

The actor adds: leader {id, since_ms}, calls_total {endpoint: {outcome: n}}, last_error,
tokens_spent_by_minute [[minute_start_ms, tokens], ...] (the last hour; :mod:`governor.spend`).
"""

from __future__ import annotations

from governor.explain import explain
from governor.model import CLASSES

WAIT_BUCKETS_S = (0.1, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, float("inf"))


class WaitHistogram:
    """Cumulative grant waits per class, in seconds, in Prometheus histogram form."""

    def __init__(self):
        self.counts = {c: [0] * len(WAIT_BUCKETS_S) for c in CLASSES}
        self.sum_s = dict.fromkeys(CLASSES, 0.0)

    def observe(self, cls: str, wait_s: float) -> None:
        counts = self.counts[cls]
        for i, le in enumerate(WAIT_BUCKETS_S):
            if wait_s <= le:
                counts[i] += 1
        self.sum_s[cls] += wait_s

    def to_json(self) -> dict:
        return {c: {"buckets": [["+Inf" if le == float("inf") else le, n]
                                for le, n in zip(WAIT_BUCKETS_S, self.counts[c], strict=True)],
                    "sum_s": round(self.sum_s[c], 3), "count": self.counts[c][-1]} for c in CLASSES}

    @classmethod
    def from_json(cls, data: dict) -> WaitHistogram:
        hist = cls()
        for c in CLASSES:
            if c in data:
                hist.counts[c] = [int(n) for _, n in data[c]["buckets"]]
                hist.sum_s[c] = float(data[c]["sum_s"])
        return hist


def snapshot(gov, now_ms: int, waits: WaitHistogram, *, explain_per_class: int = 3) -> dict:
    rc = gov.recharge
    in_flight = dict.fromkeys(CLASSES, 0)
    for grant in gov.in_flight.values():
        in_flight[grant.request.cls] += 1
    return {
        "version": 1,
        "updated_ms": now_ms,
        "synced": gov.synced,
        "balance": gov.balance,
        "refill_rate": gov.rate,
        "cap": gov.cap,
        "next_refill_ms": gov.next_refill_ms,
        "recharge": {
            "enabled": rc.enabled, "active": rc.active,
            "since_ms": rc.since_ms if rc.active else None,
            "exit_by_ms": rc.deadline_ms(), "low": rc.low,
            "high": gov.recharge_high() if gov.synced else rc.high_setting,
            "entries_total": rc.entries, "timeouts_total": rc.exits_by_timeout,
        },
        "pending": {c: gov.pending(c) for c in CLASSES},
        "in_flight": in_flight,
        "grants_total": dict(gov.grants_by_class),
        "tokens_consumed_total": dict(gov.tokens_by_class),
        "wait_seconds": waits.to_json(),
        "lost_at_cap_while_waiting_total": gov.lost_at_cap_while_waiting,
        "external_tokens_total": gov.external_tokens,
        "rejections_total": gov.rejections_total,
        "last_grant_ms": gov.last_grant_ms,
        "peek_buffer": gov.cfg.peek_buffer,
        "explanations": [
            {"request_id": e.request_id, "cls": e.cls, "position": e.position, "reason": e.reason,
             "eta_ms": e.eta_ms}
            for e in explain(gov, now_ms, explain_per_class)
        ],
    }
