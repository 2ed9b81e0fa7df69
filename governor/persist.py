"""The governor's state as plain JSON-ready data and back (pure: storage is the caller's business).

``core`` holds the scalars, credits, learned costs and recharge state; requests and grants are
listed separately so a durable store can add and remove them one by one instead of rewriting the
whole state on every message.
"""

from __future__ import annotations

from governor.config import GovernorConfig
from governor.model import CLASSES, PEEK, Grant, Request
from governor.policy import Governor

_SCALARS = ("synced", "balance", "rate", "cap", "next_refill_ms", "last_sync_ms", "external_tokens",
            "rejections_total", "lost_at_cap_while_waiting", "last_grant_ms", "hold_cls", "hold_tokens",
            "hold_until_ms", "learned_cap", "_cap_candidate", "nominal_cap", "clock_offset_ms")
_RECHARGE = ("enabled", "active", "since_ms", "armed", "entries", "exits_by_timeout", "active_ms_total")


def request_to_json(req: Request) -> dict:
    return {"id": req.id, "cls": req.cls, "units": req.units, "created_ms": req.created_ms,
            "cost": req.cost, "continues": req.continues}


def request_from_json(data: dict) -> Request:
    return Request(str(data["id"]), data["cls"], int(data.get("units", 1)), int(data.get("created_ms", 0)),
                   data.get("cost"), bool(data.get("continues", False)))


def grant_to_json(grant: Grant) -> dict:
    return {"request": request_to_json(grant.request), "estimate": grant.estimate,
            "granted_ms": grant.granted_ms, "balance_before": grant.balance_before, "alone": grant.alone,
            "refill_due_ms": grant.refill_due_ms, "uncertainty": grant.uncertainty}


def grant_from_json(data: dict) -> Grant:
    return Grant(request_from_json(data["request"]), int(data["estimate"]), int(data["granted_ms"]),
                 data["balance_before"], bool(data["alone"]), int(data["refill_due_ms"] or 0),
                 int(data.get("uncertainty", 0)))


def core_to_json(gov: Governor) -> dict:
    core = {name: getattr(gov, name) for name in _SCALARS}
    core["credit"] = dict(gov.credit)
    core["tokens_by_class"] = dict(gov.tokens_by_class)
    core["grants_by_class"] = dict(gov.grants_by_class)
    core["recharge"] = {name: getattr(gov.recharge, name) for name in _RECHARGE}
    core["costs_seen"] = {c: list(gov.costs._seen[c]) for c in CLASSES}
    core["costs_ceiling"] = dict(gov.costs._ceiling)
    return core


def restore(config: GovernorConfig, core: dict | None, pending: list[dict], in_flight: list[dict],
            done: dict[str, int]) -> Governor:
    """Rebuild a governor: ``pending`` in arrival order, ``in_flight`` grants, ``done`` ids -> time."""
    gov = Governor(config)
    if core:
        for name in _SCALARS:
            if name in core:
                setattr(gov, name, core[name])
        gov.credit.update(core.get("credit", {}))
        gov.tokens_by_class.update(core.get("tokens_by_class", {}))
        gov.grants_by_class.update(core.get("grants_by_class", {}))
        for name, value in core.get("recharge", {}).items():
            setattr(gov.recharge, name, value)
        for cls, seen in core.get("costs_seen", {}).items():
            for per_unit in seen:
                gov.costs.learn(cls, 1, per_unit)
        gov.costs._ceiling.update(core.get("costs_ceiling", {}))
    for data in pending:
        req = request_from_json(data)
        gov.queues[req.cls].append(req)
        gov._pending_ids.add(req.id)
    for data in in_flight:
        grant = grant_from_json(data)
        gov.in_flight[grant.id] = grant
        gov.reserved += grant.estimate
        gov.uncertain += grant.uncertainty
        if grant.request.cls == PEEK:
            gov.peeks_in_flight += 1
    for rid, ms in sorted(done.items(), key=lambda item: item[1]):
        gov._done[rid] = ms
    return gov

