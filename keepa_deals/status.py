"""``keepa-deals status``: the one screen an operator needs, from any machine that reaches Redis
and the database. ``--json`` prints a stable document for scripts."""

from __future__ import annotations

import json
import time

import redis

from actors.grant_claims import calls_repeated
from actors.ledger import Ledger
from governor.model import CLASSES
from governor.spend import spent_since, tokens_per_deal, window_start_ms
from keepa_deals.settings import Settings


def collect(settings: Settings, now_ms: int | None = None, store=None, client: redis.Redis | None = None) -> dict:
    """The status document: the governor's snapshot read from Redis (``client``, default a new one
    on REDIS_URL) and the counts of ``store`` (default: the database DATABASE_URL names)."""
    from storage.store import open_store

    now = now_ms if now_ms is not None else int(time.time() * 1000)
    client = client or redis.Redis.from_url(settings.redis_url)
    snap = Ledger(client).read_snapshot()
    return document(snap, store or open_store(settings.database_url), now, calls_repeated(client))


def document(snap: dict | None, store, now: int, repeated: int = 0) -> dict:
    """The status document from a governor snapshot (None: no governor state yet), a store and the
    workers' count of Keepa calls made twice for one grant (kept in Redis beside the snapshot)."""
    explanations = (snap or {}).get("explanations", [])
    pending = {}
    for cls in CLASSES:
        first = next((e for e in explanations if e["cls"] == cls), None)
        pending[cls] = {
            "pending": (snap or {}).get("pending", {}).get(cls, 0),
            "in_flight": (snap or {}).get("in_flight", {}).get(cls, 0),
            "reason": first["reason"] if first else None,
            "runs_at_ms": first["eta_ms"] if first else None,
        }
    recharge = (snap or {}).get("recharge", {})
    hour_ago = window_start_ms(now)  # this minute and the 59 before, for tokens and deals alike
    spent = spent_since((snap or {}).get("tokens_spent_by_minute"), hour_ago)
    ingested_last_hour = store.deals_ingested_since(hour_ago)
    return {
        "now_ms": now,
        "governor_seen": snap is not None,
        "snapshot_age_s": round((now - snap["updated_ms"]) / 1000, 1) if snap else None,
        "leader": (snap or {}).get("leader"),
        "tokens_balance": (snap or {}).get("balance"),
        "refill_rate": (snap or {}).get("refill_rate"),
        "recharge_active": bool(recharge.get("active")),
        "recharge_exit_by_ms": recharge.get("exit_by_ms"),
        "recharge_high": recharge.get("high"),
        "pending": pending,
        "last_grant_ms": (snap or {}).get("last_grant_ms"),
        "keepa_clock_offset_ms": (snap or {}).get("keepa_clock_offset_ms"),   # this host's clock less Keepa's
        "last_error": (snap or {}).get("last_error"),
        "deals_stored": store.deals_stored(),
        "deals_ingested": store.deals_ingested(),
        "deals_ingested_last_hour": ingested_last_hour,
        "deals_screened_out": store.deals_screened_out(),
        "tokens_spent_last_hour": spent,
        "tokens_per_deal": round(tokens_per_deal(spent, ingested_last_hour), 2),
        "candidates_waiting": store.candidates_waiting(),
        "watermark_age_s": _seconds(store.watermark_age_ms(now)),
        "products_set_aside": store.products_set_aside(),
        "calls_repeated": repeated,
    }


def _seconds(ms):
    return None if ms is None else round(ms / 1000, 1)


def _ago(now: int, ms) -> str:
    if ms is None:
        return "never"
    delta = (ms - now) / 1000
    return f"in {delta:.0f} s" if delta >= 0 else f"{-delta:.0f} s ago"


def render(doc: dict) -> str:
    now = doc["now_ms"]
    lines = []
    if not doc["governor_seen"]:
        lines.append("governor: NO STATE in Redis (never started, or REDIS_URL points elsewhere)")
    else:
        lines.append(f"governor: leader {str((doc['leader'] or {}).get('id'))[:8]}, "
                     f"state {doc['snapshot_age_s']} s old")
        lines.append(f"tokens:   balance {doc['tokens_balance']}, +{doc['refill_rate']}/min")
        if doc["recharge_active"]:
            until = _ago(now, doc["recharge_exit_by_ms"])
            lines.append(f"recharge: ACTIVE until balance {doc['recharge_high']} or {until}")
        else:
            lines.append("recharge: off")
    for cls, row in doc["pending"].items():
        line = f"{cls:8}  pending {row['pending']:>5}  in flight {row['in_flight']:>3}"
        if row["reason"]:
            line += f"  runs {_ago(now, row['runs_at_ms'])}: {row['reason']}"
        lines.append(line)
    lines.append(f"last grant {_ago(now, doc['last_grant_ms'])}; watermark age {doc['watermark_age_s']} s")
    lines.append(f"deals: {doc['deals_stored']} stored, {doc['deals_ingested']} ingested "
                 f"({doc['deals_ingested_last_hour']} in the last hour), {doc['candidates_waiting']} candidates, "
                 f"{doc['deals_screened_out']} screened out")
    lines.append(f"tokens per deal: {doc['tokens_per_deal']:g} over the last hour "
                 f"({doc['tokens_spent_last_hour']} tokens spent)")
    lines.append(f"set aside: {doc['products_set_aside']} products (malformed 3 times; "
                 f"`keepa-deals replay-set-aside` puts them back); calls repeated: {doc['calls_repeated']}")
    err = doc["last_error"]
    lines.append("last Keepa error: none" if not err else
                 f"last Keepa error {_ago(now, err['at_ms'])}: {err['endpoint']} {err['outcome']} {err['message']}")
    return "\n".join(lines)


def main(settings: Settings, as_json: bool) -> int:
    doc = collect(settings)
    print(json.dumps(doc, indent=2, sort_keys=True) if as_json else render(doc))
    return 0
