"""The governor's settings: one frozen, validated object."""

from __future__ import annotations

from dataclasses import dataclass, field

from governor.model import CLASSES, COMMIT, PEEK, UPSERT

MINUTE_MS = 60_000


@dataclass(frozen=True)
class GovernorConfig:
    """Every knob of the policy, with the defaults the design settled on.

    ``weights`` are each class's guaranteed share of the refill while it has work pending;
    unused share is lent to the others. ``peek_buffer`` bounds how far peek runs ahead of commit:
    peeks are granted only while fewer than this many commit requests wait plus peek calls are in
    flight (each may bring commits). It counts calls, not ASINs: a peek call carries up to a batch
    of ASINs and a commit request up to the commit batch, both sized for the plan. ``recharge`` is
    "off" (the default: over a simulated week on the 5/min plan the governor ingests more without
    burst mode, see the README), "auto" (on below ``recharge_below_rate`` tokens a minute) or "on".
    """

    floor: int = 0
    max_tokens: int | None = None
    weights: dict = field(default_factory=lambda: {UPSERT: 2, COMMIT: 5, PEEK: 3})
    initial_unit_cost: dict = field(default_factory=lambda: {UPSERT: 5, COMMIT: 20, PEEK: 1})
    # the most one unit can cost (Keepa's costs, README): a page 5; a peek 1, +1 rating, +1 update;
    # a commit 6 per 10 offers found (offers up to 50) + 2 stock
    max_unit_cost: dict = field(default_factory=lambda: {UPSERT: 5, COMMIT: 32, PEEK: 3})
    cost_window: int = 32
    peek_buffer: int = 8
    recharge: str = "off"
    recharge_below_rate: int = 10
    recharge_low: int = 20
    recharge_high: int = 280
    recharge_timeout_ms: int = 60 * MINUTE_MS
    recharge_exempt: tuple = (UPSERT,)
    period_ms: int = MINUTE_MS
    remember_done: int = 65_536
    remember_ms: int = 60 * MINUTE_MS
    hold_grace_ms: int = 5_000
    hold_calls: int = 10

    def __post_init__(self):
        if set(self.weights) != set(CLASSES) or any(w <= 0 for w in self.weights.values()):
            raise ValueError(f"weights must give a positive weight to each of {CLASSES}: {self.weights}")
        if set(self.initial_unit_cost) != set(CLASSES) or any(c < 0 for c in self.initial_unit_cost.values()):
            raise ValueError(f"initial_unit_cost must give each of {CLASSES} a cost >= 0")
        if self.recharge not in ("auto", "on", "off"):
            raise ValueError(f"recharge must be auto, on or off, got {self.recharge!r}")
        if not 0 <= self.recharge_low < self.recharge_high:
            raise ValueError(
                f"recharge marks need 0 <= low < high, got {self.recharge_low}, {self.recharge_high}"
            )
        if self.recharge_timeout_ms <= 0 or self.period_ms <= 0:
            raise ValueError("recharge_timeout_ms and period_ms must be positive")
        if self.peek_buffer < 1 or self.cost_window < 1 or self.remember_done < 1:
            raise ValueError("peek_buffer, cost_window and remember_done must be >= 1")
        if any(c not in CLASSES for c in self.recharge_exempt):
            raise ValueError(f"recharge_exempt names unknown classes: {self.recharge_exempt}")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {self.max_tokens}")
