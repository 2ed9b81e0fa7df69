"""Recharge (burst) mode: on low plans, let the bucket fill before spending it in one burst.

Enter when the balance falls below ``low`` (a downward crossing: the balance must have been at or
above ``low`` since the last exit, so a timeout exit at a low balance cannot flap straight back in);
leave when the balance reaches ``high`` or after ``timeout_ms``, whichever comes first. ``high`` is
clamped to ``cap - rate`` so the refill that would reach it can never overflow the cap: a target
that cannot occur is never waited for.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Recharge:
    enabled: bool
    low: int
    high_setting: int
    timeout_ms: int
    active: bool = False
    since_ms: int = 0
    armed: bool = True
    entries: int = 0
    exits_by_timeout: int = 0
    active_ms_total: int = 0

    def high(self, cap: int, rate: int) -> int:
        return max(self.low + 1, min(self.high_setting, cap - rate))

    def deadline_ms(self) -> int | None:
        return self.since_ms + self.timeout_ms if self.active else None

    def update(self, balance: float, cap: int, rate: int, now_ms: int) -> None:
        """Move the state machine for the current balance at ``now_ms``."""
        if not self.enabled:
            return
        if self.active:
            if balance >= self.high(cap, rate):
                self._leave(now_ms)
            elif now_ms >= self.since_ms + self.timeout_ms:
                self.exits_by_timeout += 1
                self._leave(now_ms)
            return
        if balance >= self.low:
            self.armed = True
        elif self.armed:
            self.active, self.since_ms, self.armed = True, now_ms, False
            self.entries += 1

    def _leave(self, now_ms: int) -> None:
        self.active_ms_total += now_ms - self.since_ms
        self.active = False

    def active_ms(self, now_ms: int) -> int:
        """Total time spent in recharge up to ``now_ms``."""
        return self.active_ms_total + (now_ms - self.since_ms if self.active else 0)
