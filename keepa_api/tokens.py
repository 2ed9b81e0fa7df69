"""Keepa's token rules as a pure model.

Facts (docs/keepa.md): ``refillRate`` tokens arrive in one lump per refill period (60 s);
unused tokens expire after an hour, so the balance is capped at ``60 x refillRate`` unless a plan says
otherwise; a call is accepted whenever the balance is positive and is then charged in full, even if
that drives the balance negative; at a balance <= 0 the call is refused with HTTP 429.

The simulator, the embedded Keepa server and the governor's tests all use this one model, so they
agree on what Keepa does. No clock is read here: every method takes ``now_ms``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace

REFILL_PERIOD_MS = 60_000
CAP_MINUTES = 60


class RateSchedule:
    """Refill rate (tokens per period) as a step function of the period index since the start."""

    __slots__ = ("_minutes", "_rates")

    def __init__(self, steps: int | float | list | tuple):
        if isinstance(steps, (int, float)) and not isinstance(steps, bool):
            steps = [[0, steps]]
        pairs = sorted((int(m), int(r)) for m, r in steps)
        if not pairs:
            raise ValueError("a rate schedule needs at least one [minute, rate] step")
        if pairs[0][0] != 0:
            pairs.insert(0, (0, pairs[0][1]))
        for minute, rate in pairs:
            if minute < 0 or rate < 0:
                raise ValueError(f"rate step [{minute}, {rate}] must not be negative")
        self._minutes = [m for m, _ in pairs]
        self._rates = [r for _, r in pairs]

    def rate_at(self, minute: int) -> int:
        return self._rates[bisect_right(self._minutes, minute) - 1]


@dataclass(frozen=True, slots=True)
class Envelope:
    """The token fields of a Keepa response (errors included), with units in the names."""

    timestamp_ms: int
    tokens_left: int
    refill_in_ms: int
    refill_rate: int
    tokens_consumed: int = 0
    token_flow_reduction: float = 0.0
    processing_time_ms: int = 0

    def to_json(self) -> dict:
        return {
            "timestamp": self.timestamp_ms,
            "tokensLeft": self.tokens_left,
            "refillIn": self.refill_in_ms,
            "refillRate": self.refill_rate,
            "tokenFlowReduction": self.token_flow_reduction,
            "tokensConsumed": self.tokens_consumed,
            "processingTimeInMs": self.processing_time_ms,
        }

    @classmethod
    def from_json(cls, body: dict) -> Envelope:
        """Read the envelope out of a Keepa response body; raise ValueError naming a bad field."""
        if not isinstance(body, dict):
            raise ValueError(f"response body is {type(body).__name__}, not a JSON object")
        values = {}
        for key in ("timestamp", "tokensLeft", "refillIn", "refillRate"):
            value = body.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"envelope field {key!r} is missing or not a number: {value!r}")
            values[key] = int(value)
        consumed = body.get("tokensConsumed", 0)
        if isinstance(consumed, bool) or not isinstance(consumed, (int, float)):
            raise ValueError(f"envelope field 'tokensConsumed' is not a number: {consumed!r}")
        flow = body.get("tokenFlowReduction", 0.0)
        if isinstance(flow, bool) or not isinstance(flow, (int, float)):
            flow = 0.0
        if not 0 <= values["refillIn"] <= 10 * REFILL_PERIOD_MS:
            raise ValueError(f"envelope field 'refillIn' out of range: {values['refillIn']}")
        if values["refillRate"] < 0:
            raise ValueError(f"envelope field 'refillRate' is negative: {values['refillRate']}")
        return cls(
            timestamp_ms=values["timestamp"],
            tokens_left=values["tokensLeft"],
            refill_in_ms=values["refillIn"],
            refill_rate=values["refillRate"],
            tokens_consumed=int(consumed),
            token_flow_reduction=float(flow),
        )


class TokenBucket:
    """Keepa's bucket: lump refills, a cap, and the deficit rule. Mutable, pure (time is an argument).

    ``refilled_total`` counts tokens actually credited, ``lost_at_cap_total`` tokens that a refill
    could not credit because the bucket was full, ``spent_total`` tokens charged. The books always
    balance: ``start + refilled_total - spent_total == balance``.
    """

    __slots__ = (
        "schedule", "max_tokens", "balance", "start_tokens", "start_ms", "period_ms",
        "next_refill_ms", "refills_done", "refilled_total", "lost_at_cap_total", "spent_total",
        "refused_total",
    )

    def __init__(
        self,
        refill_per_minute: int | list | RateSchedule,
        *,
        max_tokens: int | None = None,
        start_tokens: int = 0,
        start_ms: int = 0,
        period_ms: int = REFILL_PERIOD_MS,
    ):
        if period_ms <= 0:
            raise ValueError(f"period_ms must be positive, got {period_ms}")
        if max_tokens is not None and max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.schedule = (
            refill_per_minute if isinstance(refill_per_minute, RateSchedule)
            else RateSchedule(refill_per_minute)
        )
        self.max_tokens = max_tokens
        self.start_tokens = int(start_tokens)
        self.balance = int(start_tokens)
        self.start_ms = start_ms
        self.period_ms = period_ms
        self.next_refill_ms = start_ms + period_ms
        self.refills_done = 0
        self.refilled_total = 0
        self.lost_at_cap_total = 0
        self.spent_total = 0
        self.refused_total = 0

    # -- the plan -------------------------------------------------------------------------------
    @property
    def rate(self) -> int:
        """Tokens credited by the next refill."""
        return self.schedule.rate_at(self.refills_done)

    @property
    def cap(self) -> int:
        if self.max_tokens is not None:
            return self.max_tokens
        return CAP_MINUTES * self.rate

    # -- time -----------------------------------------------------------------------------------
    def refill_once(self) -> tuple[int, int]:
        """Apply the refill due at ``next_refill_ms``; return (credited, lost at the cap)."""
        rate, cap = self.rate, self.cap
        room = max(0, cap - self.balance)
        credited = min(rate, room)
        self.balance += credited
        self.refilled_total += credited
        self.lost_at_cap_total += rate - credited
        self.refills_done += 1
        self.next_refill_ms += self.period_ms
        return credited, rate - credited

    def advance(self, now_ms: int) -> tuple[int, int]:
        """Apply every refill due at or before ``now_ms``; return (credited, lost) in total."""
        credited = lost = 0
        while self.next_refill_ms <= now_ms:
            c, lost_now = self.refill_once()
            credited += c
            lost += lost_now
        return credited, lost

    def refill_in_ms(self, now_ms: int) -> int:
        return max(0, self.next_refill_ms - now_ms)

    # -- calls ----------------------------------------------------------------------------------
    def charge(self, cost: int, now_ms: int) -> bool:
        """Keepa's rule: accept and charge in full if the balance is positive, else refuse (429)."""
        if cost < 0:
            raise ValueError(f"a call cannot cost {cost} tokens")
        self.advance(now_ms)
        if self.balance <= 0:
            self.refused_total += 1
            return False
        self.balance -= cost
        self.spent_total += cost
        return True

    def envelope(self, now_ms: int, consumed: int = 0) -> Envelope:
        self.advance(now_ms)
        return Envelope(
            timestamp_ms=now_ms,
            tokens_left=self.balance,
            refill_in_ms=self.refill_in_ms(now_ms),
            refill_rate=self.rate,
            tokens_consumed=consumed,
        )


def merge_envelopes(envelopes: Sequence[Envelope]) -> Envelope:
    """One envelope for several calls made under one grant: the numbers of the answer Keepa gave last
    (the highest timestamp; among equal ones the lowest balance, which has the most charges in it)
    and the tokens every call consumed."""
    if not envelopes:
        raise ValueError("merge_envelopes needs at least one envelope")
    last = max(envelopes, key=lambda e: (e.timestamp_ms, -e.tokens_left))
    return replace(last, tokens_consumed=sum(e.tokens_consumed for e in envelopes),
                   processing_time_ms=max(e.processing_time_ms for e in envelopes))
