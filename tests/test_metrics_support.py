"""Shared fakes for the metrics tests (no tests here): a store with fixed counts, a Redis stand-in,
a governor snapshot made by the real governor, and a parser for the text exposition format."""

from __future__ import annotations

import json
import math

from prometheus_client.parser import text_string_to_metric_families

from governor.config import GovernorConfig
from governor.model import Request
from governor.policy import Governor
from governor.snapshot import WaitHistogram, snapshot
from keepa_api.tokens import Envelope
from metrics.exporter import SNAPSHOT_KEY

NOW_MS = 1_700_000_000_000
EXPECTED_NAMES = {
    "keepa_tokens_balance", "keepa_tokens_cap", "keepa_recharge_active", "keepa_recharge_exit_by_timestamp_seconds",
    "keepa_deals_ingested_per_minute", "keepa_deals_ingested", "keepa_deals_stored", "keepa_candidates_waiting",
    "keepa_requests_pending", "keepa_requests_in_flight", "keepa_tokens_consumed", "keepa_grants",
    "keepa_grant_wait_seconds", "keepa_tokens_lost_at_cap_while_waiting", "keepa_external_tokens",
    "keepa_requests_rejected", "keepa_calls", "keepa_last_grant_timestamp_seconds",
    "keepa_last_deal_ingested_timestamp_seconds", "keepa_recharge_entries", "keepa_recharge_timeouts",
    "keepa_governor_leader", "keepa_governor_up", "keepa_governor_snapshot_age_seconds",
    "keepa_refill_rate_tokens_per_minute", "keepa_watermark_age_seconds", "keepa_exporter_source_up",
    "keepa_feed_last_scan_timestamp_seconds", "keepa_feed_scan_interval_seconds",
    "keepa_scheduler_last_tick_timestamp_seconds", "keepa_candidate_oldest_claim_age_seconds",
    "keepa_deals_screened_out", "keepa_deals_ingested_last_hour", "keepa_tokens_spent_last_hour",
    "keepa_tokens_per_deal",
    "keepa_calls_repeated", "keepa_products_set_aside",
}


class FakeStore:
    """The counting half of ``storage.store.Store`` with fixed answers; records what it was asked."""

    def __init__(self, stored=0, ingested=0, recent=0, last_ms=None, waiting=0, watermark_ms=None, fail=False,
                 last_scan_ms=None, oldest_claim_ms=None, screened=0, set_aside=0):
        self.stored, self.ingested, self.recent, self.screened = stored, ingested, recent, screened
        self.set_aside = set_aside
        self.last_ms, self.waiting, self.watermark_ms, self.fail = last_ms, waiting, watermark_ms, fail
        self.last_scan_ms, self.claim_ms = last_scan_ms, oldest_claim_ms
        self.since_asked: list[int] = []
        self.closed = 0

    def _check(self):
        if self.fail:
            raise ConnectionError("database is down")

    def deals_stored(self):
        self._check()
        return self.stored

    def deals_ingested(self):
        self._check()
        return self.ingested

    def deals_ingested_since(self, since_ms):
        self._check()
        self.since_asked.append(since_ms)
        return self.recent

    def last_ingested_ms(self):
        self._check()
        return self.last_ms

    def candidates_waiting(self):
        self._check()
        return self.waiting

    def watermark_age_ms(self, now_ms):
        self._check()
        return None if self.watermark_ms is None else now_ms - self.watermark_ms

    def feed_last_scan_ms(self):
        self._check()
        return self.last_scan_ms

    def oldest_claim_ms(self):
        self._check()
        return self.claim_ms

    def deals_screened_out(self):
        self._check()
        return self.screened

    def products_set_aside(self):
        self._check()
        return self.set_aside

    def close(self):
        self.closed += 1


class FakeRedis:
    """``get`` only: the governor snapshot's bytes (``value``) at its key, ``others`` at theirs, or
    raises if told to."""

    def __init__(self, value=None, error: Exception | None = None, others: dict | None = None):
        self.value, self.error, self.others = value, error, others or {}

    def get(self, key):
        if self.error:
            raise self.error
        return self.value if key == SNAPSHOT_KEY else self.others.get(key)


def governor_snapshot(now_ms: int = NOW_MS) -> dict:
    """A snapshot written by the real governor: synced at 10 tokens on the 5/min plan (so recharging),
    one upsert granted after a 3 s wait, one commit pending; plus what the actor adds. Burst mode is
    off by default since issue 12, so it is turned on here: the snapshot must show a recharge."""
    gov = Governor(GovernorConfig(recharge="auto"))
    start = now_ms - 3000
    gov.sync(Envelope(start, 10, 30_000, 5), start)
    gov.request(Request("u1", "upsert", 1, start), start)
    gov.request(Request("c1", "commit", 1, start), start)
    decision = gov.decide(now_ms)
    waits = WaitHistogram()
    for grant in decision.grants:
        waits.observe(grant.request.cls, (now_ms - grant.request.created_ms) / 1000)
    doc = snapshot(gov, now_ms, waits)
    doc["leader"] = {"id": "governor-a", "since_ms": now_ms - 60_000}
    doc["calls_total"] = {"deal": {"ok": 7, "429": 2}, "commit": {"ok": 3, "402": 1}}
    doc["last_error"] = {"at_ms": now_ms - 1000, "endpoint": "deal", "outcome": "429", "message": "NOT_ENOUGH_TOKEN"}
    doc["tokens_spent_by_minute"] = [[now_ms // 60_000 * 60_000 - 60 * 60_000, 50],   # an hour ago: left out
                                     [now_ms // 60_000 * 60_000 - 59 * 60_000, 30],
                                     [now_ms // 60_000 * 60_000, 12]]
    return json.loads(json.dumps(doc))  # exactly what survives the trip through Redis


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample_name, sorted label items): value}`` from the text exposition format."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed: dict, name: str, **labels) -> float:
    return parsed[(name, tuple(sorted(labels.items())))]


def helps(text: str) -> dict[str, str]:
    return {f.name: f.documentation for f in text_string_to_metric_families(text)}


def all_finite(parsed: dict) -> bool:
    return all(math.isfinite(v) for v in parsed.values())
