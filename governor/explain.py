"""Why each pending request waits, in numbers, and when it should be granted at the current rate.

The ETA comes from a projection: a copy of the governor is run forward on its own model (refills at
the reported rate, each grant settling at its mean learned cost, no new arrivals, no commits born of
peeks) until the requests asked about are granted or a week has passed. It is an estimate at the
current rate, and is labelled as one.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

from governor.model import CLASSES, COMMIT, PEEK, Explanation
from keepa_api.tokens import Envelope

HORIZON_MS = 7 * 24 * 3_600_000


def _reason(gov, cls: str, position: int, now_ms: int) -> str:
    if not gov.synced:
        return "waiting for the first token envelope from Keepa (/token is free)"
    cfg, parts = gov.cfg, []
    rc = gov.recharge
    if rc.active and cls not in cfg.recharge_exempt:
        deadline = rc.since_ms + rc.timeout_ms
        parts.append(f"recharge: balance {gov.balance} rising to {gov.recharge_high()} "
                     f"(+{gov.rate}/min), ends by {deadline} ms at the latest")
    elif gov.balance - gov.uncertain <= cfg.floor:
        parts.append(f"balance {gov.balance} (less {gov.uncertain} for calls in flight) at or below floor "
                     f"{cfg.floor}; next refill +{gov.rate} at {gov.next_refill_ms + gov.clock_offset_ms} ms")
    if cls == PEEK and len(gov.queues[COMMIT]) + gov.peeks_in_flight >= cfg.peek_buffer:
        parts.append(f"backpressure: {len(gov.queues[COMMIT])} commit requests wait and "
                     f"{gov.peeks_in_flight} peek calls are in flight (buffer {cfg.peek_buffer} calls)")
    if gov.hold_cls and gov.hold_cls != cls:
        parts.append(f"{gov.hold_tokens} tokens held for the {gov.hold_cls} scan in progress")
    ahead = {c: len(gov.queues[c]) for c in CLASSES if CLASSES.index(c) < CLASSES.index(cls)}
    ahead = {c: n for c, n in ahead.items() if n}
    if position:
        parts.append(f"{position} {cls} request(s) ahead in its own queue")
    if ahead:
        parts.append("higher priority waiting: " + ", ".join(f"{n} {c}" for c, n in ahead.items()))
    return "; ".join(parts) or "grantable now"


def explain(gov, now_ms: int, per_class: int = 5) -> list[Explanation]:
    """Explanations for the first ``per_class`` pending requests of each class."""
    wanted = {req.id: (cls, i) for cls in CLASSES for i, req in enumerate(list(gov.queues[cls])[:per_class])}
    etas = project(gov, now_ms, set(wanted)) if gov.synced else {}
    return [Explanation(rid, cls, pos, _reason(gov, cls, pos, now_ms), etas.get(rid))
            for rid, (cls, pos) in wanted.items()]


def project(gov, now_ms: int, ids: set[str]) -> dict[str, int]:
    """When each of ``ids`` would be granted if nothing else arrived and costs held."""
    if not ids:
        return {}
    # the projection makes no new requests, so it never reads the finished ids (up to
    # ``remember_done`` of them): start the copy with none instead of copying them on every snapshot
    sim = copy.deepcopy(gov, {id(gov._done): OrderedDict()})
    found: dict[str, int] = {}
    t = now_ms
    while ids - found.keys() and t - now_ms <= HORIZON_MS:
        decision = sim.decide(t)
        for grant in decision.grants:
            if grant.id in ids:
                found[grant.id] = t
            cost = round(sim.costs.mean(grant.request.cls, grant.request.units))
            keepa_t = sim.keepa_ms(t)   # Keepa stamps its envelopes on its own clock
            sim.settle(grant.id, Envelope(keepa_t, sim.balance + grant.estimate - cost,
                                          max(0, (sim.next_refill_ms or keepa_t) - keepa_t), sim.rate, cost), t)
        if decision.wake_at_ms is None or decision.wake_at_ms <= t:
            if not decision.grants:
                break
            continue
        t = decision.wake_at_ms
    return found
