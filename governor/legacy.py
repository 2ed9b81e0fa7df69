"""The ``legacy`` comparison policy: a faithful replica of the old system's TokenManager.

Its final state, as the seed write-ups describe it (2026-02-01 to 2026-02-07):

- every task asks permission for its own call; the upserter's threshold is 50 tokens, the
  backfiller's (peek and commit) 80;
- "controlled deficit": a call is allowed when the *starting* balance is above the threshold; the
  call may then drive the balance negative (2026-02-04); before that fix the target was
  ``cost + threshold`` (kept as ``target_includes_cost`` for the historical variants);
- the "priority pass" (calls under 10 tokens allowed at any positive balance) is off below 10
  tokens a minute (2026-02-05);
- recharge mode below 10 tokens a minute: under 20 tokens every task pauses until 280, with a
  60-minute timeout (2026-02-05, timeout added 2026-02-07);
- a waiting task sleeps ``poll_ms`` and asks again, and every check first syncs the balance from
  Keepa's ``/token`` (the old ``sync_tokens``).

Historical variants (the settings the seeds say the failures happened under) are ``LEGACY_VARIANTS``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

from governor.model import CLASSES, COMMIT, PEEK, UPSERT, Decision, Grant, Rejection, Request
from governor.recharge import Recharge
from keepa_api.tokens import CAP_MINUTES, Envelope

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class LegacyConfig:
    thresholds: dict = field(default_factory=lambda: {UPSERT: 50, PEEK: 80, COMMIT: 80})
    unit_cost: dict = field(default_factory=lambda: {UPSERT: 5, PEEK: 2, COMMIT: 20})
    target_includes_cost: bool = False
    priority_pass: bool | None = None   # None: on at 10 tokens a minute and above
    priority_pass_below_cost: int = 10
    low_plan_below_rate: int = 10
    recharge: bool | None = None        # None: on below 10 tokens a minute
    recharge_low: int = 20
    recharge_high: int = 280
    recharge_timeout_ms: int | None = HOUR_MS
    poll_ms: int = 60_000


class LegacyPolicy:
    name = "legacy"

    def __init__(self, config: LegacyConfig | None = None):
        self.cfg = config or LegacyConfig()
        self.synced = False
        self.balance = 0
        self.rate = 0
        self.cap = 0
        self.waiting: deque[tuple[Request, int]] = deque()  # (request, next check ms)
        self.in_flight: dict[str, Grant] = {}
        self.recharge = Recharge(enabled=False, low=self.cfg.recharge_low, high_setting=self.cfg.recharge_high,
                                 timeout_ms=self.cfg.recharge_timeout_ms or 10**15)
        self.tokens_by_class = dict.fromkeys(CLASSES, 0)
        self.grants_by_class = dict.fromkeys(CLASSES, 0)
        self._ids: set[str] = set()

    # -- messages -------------------------------------------------------------------------------
    def request(self, req: Request, now_ms: int) -> Rejection | None:
        if req.id in self._ids:
            return None
        self._ids.add(req.id)
        self.waiting.append((req, now_ms))
        return None

    def settle(self, grant_id: str, envelope: Envelope, now_ms: int) -> bool:
        grant = self.in_flight.pop(grant_id, None)
        if grant is None:
            return False
        self._ids.discard(grant_id)
        self.tokens_by_class[grant.request.cls] += envelope.tokens_consumed
        return True

    def sync(self, envelope: Envelope, now_ms: int) -> None:
        self.synced = True
        self.balance = envelope.tokens_left
        self.rate = envelope.refill_rate
        self.cap = CAP_MINUTES * self.rate
        low_plan = self.rate < self.cfg.low_plan_below_rate
        self.recharge.enabled = low_plan if self.cfg.recharge is None else self.cfg.recharge

    def wants_token_sync(self, now_ms: int) -> bool:
        """The old TokenManager synced from ``/token`` before every permission check."""
        return any(due <= now_ms for _, due in self.waiting)

    # -- the decision ---------------------------------------------------------------------------
    def decide(self, now_ms: int) -> Decision:
        decision = Decision()
        if not self.synced:
            return decision
        still = deque()
        for req, due in self.waiting:
            if due > now_ms:
                still.append((req, due))
            elif self._permitted(req, now_ms):
                cost = self._cost(req)
                self.balance -= cost
                grant = Grant(req, cost, now_ms)
                self.in_flight[req.id] = grant
                self.grants_by_class[req.cls] += 1
                decision.grants.append(grant)
            else:
                still.append((req, now_ms + self.cfg.poll_ms))
        self.waiting = still
        if still:
            decision.wake_at_ms = min(due for _, due in still)
        return decision

    def _cost(self, req: Request) -> int:
        return req.cost if req.cost is not None else self.cfg.unit_cost[req.cls] * req.units

    def _permitted(self, req: Request, now_ms: int) -> bool:
        cfg, recharge = self.cfg, self.recharge
        if recharge.enabled:
            high = cfg.recharge_high  # the old code's fixed target, reachable or not
            if recharge.active:
                timeout = cfg.recharge_timeout_ms
                timed_out = timeout is not None and now_ms - recharge.since_ms >= timeout
                if self.balance >= high or timed_out:
                    recharge.exits_by_timeout += timed_out and self.balance < high
                    recharge._leave(now_ms)
                else:
                    return False
            elif self.balance < cfg.recharge_low:
                recharge.active, recharge.since_ms = True, now_ms
                recharge.entries += 1
                return False
        cost = self._cost(req)
        low_plan = self.rate < cfg.low_plan_below_rate
        priority_pass = (not low_plan) if cfg.priority_pass is None else cfg.priority_pass
        if priority_pass and cost < cfg.priority_pass_below_cost and self.balance > 0:
            return True
        target = cfg.thresholds[req.cls] + (cost if cfg.target_includes_cost else 0)
        return self.balance > target

    # -- views ----------------------------------------------------------------------------------
    def pending(self, cls: str | None = None) -> int:
        if cls is None:
            return len(self.waiting)
        return sum(1 for req, _ in self.waiting if req.cls == cls)


def variant(**changes) -> LegacyConfig:
    return replace(LegacyConfig(), **changes)
