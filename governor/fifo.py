"""The ``fifo`` comparison policy: one Keepa-rule bucket granting strictly in arrival order.

This is what a shared rate limiter or a wait-and-retry client gives: a call goes out whenever the
balance is positive, oldest first, whatever its class. It shares the governor's token model (sync,
settle, refills) and drops everything else: no priority, no shares, no backpressure, no recharge, no
rejection of impossible requests.
"""

from __future__ import annotations

from collections import deque

from governor.config import GovernorConfig
from governor.model import Grant, Rejection, Request
from governor.policy import Governor


class FifoPolicy(Governor):
    name = "fifo"

    def __init__(self, config: GovernorConfig | None = None):
        naive = GovernorConfig(recharge="off")
        super().__init__(config or GovernorConfig(recharge="off", max_unit_cost=naive.initial_unit_cost))
        self.order: deque[Request] = deque()

    def request(self, req: Request, now_ms: int) -> Rejection | None:
        before = len(self._pending_ids)
        result = super().request(req, now_ms)
        if len(self._pending_ids) > before:
            self.order.append(req)
        return result

    def _impossible(self, req: Request) -> Rejection | None:
        return None

    def _pick(self, overflow: bool) -> str | None:
        return self.order[0].cls if self.order else None

    def _grant(self, cls: str, now_ms: int) -> Grant:
        self.order.popleft()
        return super()._grant(cls, now_ms)
