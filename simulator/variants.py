"""The old system as it was when each seed failure happened: (policy settings, pipeline settings).

``legacy`` in reports is the final state (:class:`governor.legacy.LegacyConfig` defaults); these
earlier states let each failure scenario show the failure where the seeds say it happened.
"""

from __future__ import annotations

from governor.legacy import LegacyConfig, variant
from governor.model import COMMIT, PEEK, UPSERT
from simulator.run import PipelineConfig

OLD_BEAT = {"cadence": "every_minute", "backfill_window": 1, "sequential": True, "scan_pages": 1, "on_demand": False}
# where a seed is about the backfiller alone, the upserter runs hourly so that its own starvation
# of the backfiller (f06) does not hide the failure under study
HOURLY = {"cadence": 60, "backfill_window": 1, "sequential": True, "scan_pages": 1, "on_demand": False}


def _thresholds(upsert: int, backfill: int) -> dict:
    return {UPSERT: upsert, PEEK: backfill, COMMIT: backfill}


VARIANTS: dict[str, tuple[LegacyConfig, PipelineConfig]] = {
    # 2026-02-05, before: priority pass for calls under 10 tokens at any balance; the backfiller
    # needs cost + 60 in 2-ASIN full-fetch batches; no recharge mode yet
    "f01-priority-pass": (
        variant(priority_pass=True, recharge=False, thresholds=_thresholds(50, 60), target_includes_cost=True),
        PipelineConfig(**OLD_BEAT, backfill_batch=2, peek_first=False)),
    # 2026-02-05, before: 2-ASIN batches (~40 tokens) sipped at 5 tokens a minute
    "f02-sipping": (
        variant(recharge=False, target_includes_cost=True),
        PipelineConfig(**HOURLY, backfill_batch=2, peek_first=False)),
    # 2026-02-05, before: batches of 200 held in memory until done, lost on every restart
    "f03-in-memory-batches": (
        variant(recharge=False),
        PipelineConfig(**HOURLY, backfill_batch=1, peek_first=False, memory_batch=200)),
    # 2026-02-01, before: one threshold for both tasks; the backfiller drains every refill
    "f04-backfiller-drains": (
        variant(recharge=False, thresholds=_thresholds(50, 50)),
        PipelineConfig(cadence="every_minute", backfill_window=4, sequential=True, backfill_batch=1,
                       peek_first=False, on_demand=False)),
    # 2026-02-04, before: 20-ASIN chunks reserved at once: cost 400 + buffer 80 > bucket 300
    "f05-impossible-target": (
        variant(recharge=False, target_includes_cost=True),
        PipelineConfig(**HOURLY, backfill_batch=20, peek_first=False)),
    # 2026-02-04: backfiller threshold 150, upserter 50 takes the whole trickle
    "f06-threshold-livelock": (
        variant(recharge=False, thresholds=_thresholds(50, 150)),
        PipelineConfig(**OLD_BEAT, backfill_batch=5, peek_first=False)),
    # 2026-02-04: upserter target 200 + 50 = 250 never reached; the backfiller's 100 + 80 wins
    "f07-priority-inversion": (
        variant(recharge=False, target_includes_cost=True),
        PipelineConfig(**OLD_BEAT, backfill_batch=5, peek_first=False, upsert_cost=200)),
    # 2026-02-05 to 02-07: recharge to 280 with no timeout, on a bucket that tops out at 275
    "f08-recharge-no-timeout": (
        variant(recharge_timeout_ms=None),
        PipelineConfig(**OLD_BEAT, backfill_batch=1)),
    # 2026-02-07, before: "incomplete" runs never move the watermark
    "f09-frozen-watermark": (
        LegacyConfig(),
        PipelineConfig(**OLD_BEAT, backfill_batch=1, ratchet=False)),
    # 2026-02-07, before: zombie deals rejected by a 20-token full fetch
    "f10-zombie-deals": (
        LegacyConfig(),
        PipelineConfig(**OLD_BEAT, backfill_batch=1, peek_first=False)),
}
