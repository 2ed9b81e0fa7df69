"""Each class's published worst-case wait, as a formula of the plan and the settings.

With ``r`` tokens a minute, period ``P`` (60 s), share ``s_c = w_c / sum(w)`` (the worst case: every
class waiting), reserve cost ``C_c`` for one request of class ``c``, ``C_max`` the largest single
cost and ``D = max(0, -start_balance)`` the starting deficit, a request with ``n`` requests of its
class ahead of it (itself included) is granted within

    recharge off (or c exempt):
        D / r * P + n * P * ( ceil(C_c / (s_c * r)) + 1 + ceil((C_max + sum_h cap_h) / r) )
    recharge on and c not exempt:
        D / r * P + n * ( min(T, (high + C_max) / r * P) + P )

where ``cap_h = max(C_h, s_h * r)`` is how much credit another class can hold, ``T`` the recharge
timeout and ``high`` the recharge high mark. Reasoning, briefly: a class's credit never falls below
``-C_c`` and grows by at least ``s_c * r`` each refill while it waits, so within
``ceil(C_c / (s_c * r)) + 1`` refills it holds positive credit; from then on only higher-priority
classes holding credit, at most ``sum_h cap_h`` tokens, and a deficit of at most ``C_max`` stand
before it. In recharge every waiting class earns positive credit before the burst, and a burst
spends at least ``high - low`` tokens, so each waiting class is granted once per recharge cycle,
which the timeout bounds. ``bench/engine.py`` checks every scenario's measured ``wait_max_s``
against this bound.
"""

from __future__ import annotations

from math import ceil

from governor.config import GovernorConfig
from governor.model import CLASSES


def wait_bound_s(cls: str, *, rate: float, n: int = 1, config: GovernorConfig | None = None,
                 start_balance: float = 0, largest_cost: float | None = None, cap: int | None = None) -> float:
    cfg = config or GovernorConfig()
    if rate <= 0:
        return float("inf")
    period_s = cfg.period_ms / 1000
    costs = cfg.initial_unit_cost
    c_max = largest_cost if largest_cost is not None else max(costs.values())
    deficit_s = max(0.0, -start_balance) / rate * period_s
    total_w = sum(cfg.weights.values())
    recharge_on = cfg.recharge == "on" or (cfg.recharge == "auto" and rate < cfg.recharge_below_rate)
    if recharge_on and cls not in cfg.recharge_exempt:
        bucket = cap or (cfg.max_tokens or 60 * rate)
        high = min(cfg.recharge_high, bucket - rate)
        cycle_s = min(cfg.recharge_timeout_ms / 1000, (high + c_max) / rate * period_s) + period_s
        return deficit_s + n * cycle_s
    share = cfg.weights[cls] / total_w * rate
    others = sum(max(costs[h], cfg.weights[h] / total_w * rate) for h in CLASSES if h != cls)
    refills = ceil(costs[cls] / share) + 1 + ceil((c_max + others) / rate)
    return deficit_s + n * refills * period_s
