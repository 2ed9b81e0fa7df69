"""The series the stall alerts read: is the feed still scanned, does the scheduler tick, are claims stuck.

Deals can stop with no work waiting at all: the feed is no longer scanned (the scan chain broken, the
worker or the scheduler dead), so no candidate ever appears and every rule that needs work waiting
stays silent while the bucket fills. These series let the rules tell that apart from a feed with
nothing new (scans go on, nothing comes of them) and from a plan that explains the quiet (a recharge,
a deficit being repaid):

- ``keepa_feed_last_scan_timestamp_seconds``: when a feed scan last stored a page (the watermark
  row's write time; a scan writes it after every page, new deals or none);
- ``keepa_feed_scan_interval_seconds``: the longest gap between scans the plan schedules
  (:func:`pipeline.cadence.upsert_interval_ms` at the governor's refill rate, in real seconds);
- ``keepa_scheduler_last_tick_timestamp_seconds``: when the scheduler last finished a tick
  (:data:`SCHEDULER_TICK_KEY` in Redis, written by ``actors.processes.scheduler_tick``);
- ``keepa_candidate_oldest_claim_age_seconds``: how long the oldest candidate claimed for a peek has
  been claimed.

Every series exists from start-up; 0 means "never" (or "none claimed"), which the rules treat as
old, so a stack whose scheduler never ticked pages too. Pure: the collector supplies the readings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily

from keepa_base.redis_keys import SCHEDULER_TICK_KEY
from pipeline.cadence import upsert_interval_ms

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class StallReadings:
    """What one scrape read for the stall series (Unix ms on this system's clock; None: never/none)."""

    feed_last_scan_ms: int | None = None     # from the database
    oldest_claim_ms: int | None = None       # from the database
    scheduler_tick_ms: int | None = None     # from Redis


def read_scheduler_tick(redis_client) -> int | None:
    """The scheduler's last tick (Unix ms), or None if it never ticked or the value is not a number."""
    raw = redis_client.get(SCHEDULER_TICK_KEY)
    if raw is None:
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        log.warning("%s holds %r, not a time in ms; treating it as never", SCHEDULER_TICK_KEY, raw)
        return None


def read_database(store) -> tuple[int | None, int | None]:
    """``(feed_last_scan_ms, oldest_claim_ms)`` from a ``storage.store.Store``."""
    return store.feed_last_scan_ms(), store.oldest_claim_ms()


def scan_interval_s(refill_per_minute, minute_seconds: float) -> float:
    """The longest gap the plan leaves between feed scans, in real seconds (Keepa minutes may be
    shortened by the embedded server); 0 while the rate is unknown."""
    if isinstance(refill_per_minute, bool) or not isinstance(refill_per_minute, int | float) or refill_per_minute <= 0:
        return 0.0
    return upsert_interval_ms(refill_per_minute=refill_per_minute) / 60_000 * minute_seconds


def _seconds(ms) -> float:
    return 0.0 if ms is None else ms / 1000.0


def stall_families(readings: StallReadings, snap: dict | None, now_ms: int, minute_seconds: float = 60.0) -> list:
    rate = snap.get("refill_rate") if isinstance(snap, dict) else None
    claim_age_s = 0.0 if readings.oldest_claim_ms is None else max(0.0, (now_ms - readings.oldest_claim_ms) / 1000)
    return [
        GaugeMetricFamily("keepa_feed_last_scan_timestamp_seconds", "Unix time in seconds a feed scan last stored "
                          "a page (every page read, new deals or none, the last page of a scan included); 0 if "
                          "never.", value=_seconds(readings.feed_last_scan_ms)),
        GaugeMetricFamily("keepa_feed_scan_interval_seconds", "Longest gap in seconds the plan leaves between feed "
                          "scans at the governor's refill rate (pipeline.cadence); 0 while the rate is unknown.",
                          value=scan_interval_s(rate, minute_seconds)),
        GaugeMetricFamily("keepa_scheduler_last_tick_timestamp_seconds", "Unix time in seconds the scheduler last "
                          "finished a tick (one a Keepa minute); 0 if never.",
                          value=_seconds(readings.scheduler_tick_ms)),
        GaugeMetricFamily("keepa_candidate_oldest_claim_age_seconds", "Seconds the oldest candidate claimed for a "
                          "peek has been claimed; 0 if none is claimed.", value=claim_age_s),
    ]
