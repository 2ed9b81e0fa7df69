"""Metric names, HELP texts and the pure translation of shared state into metric families.

:func:`families` takes the governor's snapshot (a dict, or ``None`` when Redis has none), the
database counts (:class:`DatabaseCounts`, or ``None`` when the database could not be read) and
``now_ms``, and returns every family with every series present: missing data gives zeros, and
``keepa_governor_up`` / ``keepa_exporter_source_up`` say whether the zeros mean "no data".
No I/O, no clock: the collector supplies both.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from governor.model import CLASSES
from governor.snapshot import WAIT_BUCKETS_S
from governor.spend import spent_since, tokens_per_deal, window_start_ms
from keepa_base.calls import ENDPOINTS, OUTCOMES
from metrics.bucket_label import bucket_bound_label

log = logging.getLogger(__name__)

SOURCES = ("redis", "database")
INGEST_WINDOW_MINUTES = 5


@dataclass(frozen=True)
class DatabaseCounts:
    """What the exporter reads from the store on one scrape (times in Unix ms)."""

    deals_stored: int
    deals_ingested: int
    deals_ingested_window: int  # committed in the last INGEST_WINDOW_MINUTES minutes
    last_ingested_ms: int | None
    candidates_waiting: int
    watermark_age_ms: int | None
    deals_ingested_last_hour: int = 0   # committed since governor.spend.window_start_ms(now)
    deals_screened_out: int = 0         # feed deals set aside on their own numbers (never peeked)
    products_set_aside: int = 0  # malformed three times: no more calls until replayed


def _num(value, default: float = 0.0) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return default


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _per_class(kind, name: str, doc: str, values: dict | None):
    family = kind(name, doc, labels=["class"])
    values = values if isinstance(values, dict) else {}
    for cls in CLASSES:
        family.add_metric([cls], _num(values.get(cls)))
    return family


def _calls(snap: dict) -> CounterMetricFamily:
    family = CounterMetricFamily("keepa_calls", "Keepa API calls by endpoint (deal|peek|commit|token) and outcome "
                                 "(ok|429|402|400|5xx|timeout|malformed), in calls.",
                                 labels=["endpoint", "outcome"])
    calls = snap.get("calls_total") if isinstance(snap.get("calls_total"), dict) else {}
    for endpoint in ENDPOINTS:
        by_outcome = calls.get(endpoint) if isinstance(calls.get(endpoint), dict) else {}
        for outcome in OUTCOMES:
            family.add_metric([endpoint, outcome], _num(by_outcome.get(outcome)))
    return family


def _zero_buckets() -> list[tuple[str, float]]:
    return [(bucket_bound_label(le), 0.0) for le in WAIT_BUCKETS_S]


def _buckets(data) -> tuple[list[tuple[str, float]], float]:
    """The snapshot's ``{buckets: [[le_s, cumulative], ...], sum_s}`` as Prometheus buckets."""
    try:
        buckets = [(bucket_bound_label(float(le)), float(n)) for le, n in data["buckets"]]
        total = float(data["sum_s"])
    except (KeyError, TypeError, ValueError):
        return _zero_buckets(), 0.0
    counts = [n for _, n in buckets]
    if not buckets or buckets[-1][0] != "+Inf" or counts != sorted(counts):
        log.warning("wait histogram in the governor snapshot is malformed; exporting zeros")
        return _zero_buckets(), 0.0
    return buckets, total


def _waits(snap: dict) -> HistogramMetricFamily:
    family = HistogramMetricFamily("keepa_grant_wait_seconds", "Time from a token request reaching the governor "
                                   "to its grant, per class, in seconds.", labels=["class"])
    waits = snap.get("wait_seconds") if isinstance(snap.get("wait_seconds"), dict) else {}
    for cls in CLASSES:
        buckets, total = _buckets(waits.get(cls)) if cls in waits else (_zero_buckets(), 0.0)
        family.add_metric([cls], buckets, total)
    return family


def _ms_to_s(value) -> float:
    return _num(value) / 1000.0


def governor_families(snap: dict | None, now_ms: int) -> list:
    up = isinstance(snap, dict)
    snap = snap if up else {}
    recharge = snap.get("recharge") if isinstance(snap.get("recharge"), dict) else {}
    leader = snap.get("leader")
    age_s = max(0.0, (now_ms - _num(snap.get("updated_ms"), now_ms)) / 1000.0) if up else 0.0
    return [
        _gauge("keepa_governor_up", "1 if the governor's snapshot was found in Redis and read on this scrape, "
               "0 if it is missing or unreadable (then every governor series reads 0: no data, not no work).",
               1.0 if up else 0.0),
        _gauge("keepa_governor_snapshot_age_seconds", "Seconds since the governor last wrote its snapshot "
               "(it writes after every decision); 0 when there is no snapshot (see keepa_governor_up).", age_s),
        _gauge("keepa_governor_leader", "1 if the snapshot names a governor holding the leader lock, else 0.",
               1.0 if isinstance(leader, dict) and leader.get("id") else 0.0),
        _gauge("keepa_tokens_balance", "Keepa token balance in tokens, as the governor last reconciled it; "
               "negative under Keepa's deficit rule.", _num(snap.get("balance"))),
        _gauge("keepa_tokens_cap", "Most tokens the bucket can hold (60 x refill rate unless learned), in tokens.",
               _num(snap.get("cap"))),
        _gauge("keepa_refill_rate_tokens_per_minute", "Keepa refill rate in tokens per minute.",
               _num(snap.get("refill_rate"))),
        _gauge("keepa_recharge_active", "1 while the governor is in recharge (burst) mode letting the bucket fill, "
               "else 0.", 1.0 if recharge.get("active") else 0.0),
        _gauge("keepa_recharge_exit_by_timestamp_seconds", "Unix time in seconds by which the current recharge "
               "ends by timeout; 0 when not recharging.",
               _ms_to_s(recharge.get("exit_by_ms")) if recharge.get("active") else 0.0),
        CounterMetricFamily("keepa_recharge_entries", "Times the governor entered recharge mode, in entries.",
                            value=_num(recharge.get("entries_total"))),
        CounterMetricFamily("keepa_recharge_timeouts", "Recharges that ended by timeout rather than by reaching "
                            "the high mark, in recharges.", value=_num(recharge.get("timeouts_total"))),
        _per_class(GaugeMetricFamily, "keepa_requests_pending", "Token requests waiting at the governor for a grant, "
                   "per class, in requests.", snap.get("pending")),
        _per_class(GaugeMetricFamily, "keepa_requests_in_flight", "Granted requests whose Keepa call has not been "
                   "settled yet, per class, in requests.", snap.get("in_flight")),
        _per_class(CounterMetricFamily, "keepa_grants", "Grants the governor issued, per class, in grants.",
                   snap.get("grants_total")),
        _per_class(CounterMetricFamily, "keepa_tokens_consumed", "Tokens Keepa charged for granted calls, per "
                   "class, in tokens.", snap.get("tokens_consumed_total")),
        _waits(snap),
        CounterMetricFamily("keepa_tokens_lost_at_cap_while_waiting", "Refilled tokens lost because the bucket was "
                            "full while requests were waiting, in tokens.",
                            value=_num(snap.get("lost_at_cap_while_waiting_total"))),
        CounterMetricFamily("keepa_external_tokens", "Tokens spent at Keepa by something other than the governor's "
                            "grants (seen in envelopes), in tokens.", value=_num(snap.get("external_tokens_total"))),
        CounterMetricFamily("keepa_requests_rejected", "Requests the governor refused as impossible, in requests.",
                            value=_num(snap.get("rejections_total"))),
        _calls(snap),
        _gauge("keepa_last_grant_timestamp_seconds", "Unix time in seconds of the governor's last grant; 0 if none.",
               _ms_to_s(snap.get("last_grant_ms"))),
    ]


def database_families(counts: DatabaseCounts | None) -> list:
    c = counts or DatabaseCounts(0, 0, 0, None, 0, None)
    return [
        CounterMetricFamily("keepa_deals_ingested", "Deals committed (fully fetched and stored), from the "
                            "database, in deals.", value=c.deals_ingested),
        _gauge("keepa_deals_ingested_per_minute", f"Deals committed in the last {INGEST_WINDOW_MINUTES} minutes "
               f"divided by {INGEST_WINDOW_MINUTES}, from the database, in deals per minute.",
               c.deals_ingested_window / INGEST_WINDOW_MINUTES),
        _gauge("keepa_deals_stored", "Deal records stored in the database (every deal seen), in deals.",
               c.deals_stored),
        _gauge("keepa_candidates_waiting", "New deals in the database waiting for a peek, in deals.",
               c.candidates_waiting),
        _gauge("keepa_last_deal_ingested_timestamp_seconds", "Unix time in seconds of the last deal committed; "
               "0 if none.", _ms_to_s(c.last_ingested_ms)),
        _gauge("keepa_products_set_aside", "Products Keepa answered malformed three times, set aside with no "
               "more calls until an operator replays them (`keepa-deals replay-set-aside`), in products.",
               c.products_set_aside),
        _gauge("keepa_watermark_age_seconds", "Seconds since a feed scan last moved the watermark (the newest "
               "deal time fully scanned); 0 if there is none yet.", _ms_to_s(c.watermark_age_ms)),
        CounterMetricFamily("keepa_deals_screened_out", "Feed deals set aside on their own numbers before any "
                            "peek (no token spent on them), from the database, in deals.",
                            value=c.deals_screened_out),
        _gauge("keepa_deals_ingested_last_hour", "Deals committed in the last hour (this minute and the 59 "
               "before), from the database, in deals.", c.deals_ingested_last_hour),
    ]


def efficiency_families(snap: dict | None, counts: DatabaseCounts | None, now_ms: int) -> list:
    """Tokens spent over the last hour (the governor's per-minute record) and per deal ingested in it."""
    spent = spent_since((snap or {}).get("tokens_spent_by_minute"), window_start_ms(now_ms))
    deals = counts.deals_ingested_last_hour if counts is not None else 0
    return [
        _gauge("keepa_tokens_spent_last_hour", "Tokens Keepa charged for the governor's grants in the last hour "
               "(this minute and the 59 before), in tokens.", float(spent)),
        _gauge("keepa_tokens_per_deal", "Tokens spent in the last hour per deal ingested in it, in tokens per "
               "deal; with no deal ingested it equals the tokens spent (counted as one deal), 0 when idle.",
               tokens_per_deal(spent, deals)),
    ]


def source_family(up: dict[str, bool]) -> GaugeMetricFamily:
    family = GaugeMetricFamily("keepa_exporter_source_up", "1 if the exporter read this source (redis|database) "
                               "on this scrape, else 0.", labels=["source"])
    for source in SOURCES:
        family.add_metric([source], 1.0 if up.get(source) else 0.0)
    return family


def families(snap: dict | None, counts: DatabaseCounts | None, now_ms: int,
             source_up: dict[str, bool] | None = None, calls_repeated: float = 0.0) -> list:
    """Every keepa-deals metric family for one scrape (``calls_repeated``: the workers' count in Redis)."""
    up = source_up if source_up is not None else {"redis": snap is not None, "database": counts is not None}
    repeated = CounterMetricFamily("keepa_calls_repeated", "Keepa calls made again for a grant that had "
                                   "called already (a copy of the grant whose first call's outcome was "
                                   "unknown), in calls; 0 when every grant is paid for once.",
                                   value=_num(calls_repeated))
    out = [*governor_families(snap, now_ms), *database_families(counts), *efficiency_families(snap, counts, now_ms),
           repeated, source_family(up)]
    # A counter read as 0 while its source is down would look like a reset to Prometheus, and
    # increase() would count its whole total again when the source is back: leave it out instead (as
    # tokens per deal, which needs the database's deal count). keepa_exporter_source_up says why.
    unread = {name for name, source in UNREAD_WHEN_DOWN.items() if not up.get(source)}
    return [family for family in out if family.name not in unread]


# families left out of a scrape whose source could not be read, by name and source
UNREAD_WHEN_DOWN = {"keepa_deals_ingested": "database", "keepa_deals_screened_out": "database",
                    "keepa_tokens_per_deal": "database", "keepa_calls_repeated": "redis"}
