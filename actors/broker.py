"""The Redis broker, configured for this workload.

Dramatiq requeues a dead worker's unacked messages only when (a) its heartbeat is older than
``heartbeat_timeout`` and (b) a random maintenance pass runs for that queue, on 1 in
``1,000,000 / maintenance_chance`` commands naming the queue. With the defaults (60 s, 1 in 1,000)
a quiet queue like ``governor`` kept a SIGKILLed consumer's message for 8-17 minutes (measured on a
2-core machine: 458, 517, 707 and 1,340 s).
Here a process is presumed dead after 15 s of silence and one command in ten runs maintenance, so
a killed worker's messages come back within seconds of the timeout. Every process must use the
same values, so they live here and nowhere else. The governor relies on the same requeue when a
fetch's reply was lost: it drops that broker and makes a new one (a new broker id), and the old id's
unacknowledged messages come back once its heartbeat is 15 s old (:mod:`actors.governor_loop`).
"""

from __future__ import annotations

import os
from functools import cache

from dramatiq.brokers.redis import RedisBroker

from actors.doorbell import RingOnEnqueue

HEARTBEAT_TIMEOUT_MS = 15_000
MAINTENANCE_CHANCE = 100_000  # out of 1,000,000 commands
DEAD_MESSAGE_TTL_MS = 7 * 24 * 3_600_000


def make_broker(redis_url: str, **overrides) -> RedisBroker:
    options = {"heartbeat_timeout": HEARTBEAT_TIMEOUT_MS, "maintenance_chance": MAINTENANCE_CHANCE,
               "dead_message_ttl": DEAD_MESSAGE_TTL_MS, **overrides}
    broker = RedisBroker(url=redis_url, **options)
    broker.add_middleware(RingOnEnqueue(broker.client))  # the governor's doorbell (actors.doorbell)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        broker.add_middleware(_dramatiq_seconds())  # Dramatiq's own metrics, in seconds, for /metrics
    return broker


@cache
def _dramatiq_seconds():
    """One per process: its metrics register once, whatever the brokers the process makes (the
    governor makes a new one after a lost reply)."""
    from metrics.dramatiq_seconds import DramatiqSeconds

    return DramatiqSeconds()


def close_broker(broker: RedisBroker) -> None:
    """Close a broker and its Redis connections (``RedisBroker.close`` leaves its client open)."""
    broker.close()
    broker.client.close()
