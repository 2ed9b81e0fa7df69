"""The Redis broker, configured for this workload.

Dramatiq requeues a dead worker's unacked messages only when (a) its heartbeat is older than
``heartbeat_timeout`` and (b) a random maintenance pass runs for that queue, on 1 in
``1,000,000 / maintenance_chance`` commands naming the queue. With the defaults (60 s, 1 in 1,000)
a quiet queue like ``governor`` kept a SIGKILLed consumer's message for 8-17 minutes (measured on a
2-core machine: 458, 517, 707 and 1,340 s).
Here a process is presumed dead after 15 s of silence and one command in ten runs maintenance, so
a killed worker's messages come back within seconds of the timeout. Every process must use the
same values, so they live here and nowhere else.
"""

from __future__ import annotations

import os

from dramatiq.brokers.redis import RedisBroker

from actors.dispatch import Dispatch
from actors.doorbell import QUEUE as GOVERNOR_QUEUE

HEARTBEAT_TIMEOUT_MS = 15_000
MAINTENANCE_CHANCE = 100_000  # out of 1,000,000 commands
DEAD_MESSAGE_TTL_MS = 7 * 24 * 3_600_000


class Broker(RedisBroker):
    """Dramatiq's Redis broker, but an undelayed message for the governor goes through
    :class:`actors.dispatch.Dispatch`, whose script also rings the governor's doorbell
    (:mod:`actors.doorbell`) in the same round trip. The message, its Redis id, the enqueue
    middleware and the Redis layout are what Dramatiq's own enqueue gives. Two differences: that
    script does not refresh the sender's heartbeat (its fetches and acknowledgements do) and does
    not roll for maintenance (the governor's fetches of its queue do), and a lost connection
    raises Dramatiq's ConnectionClosed rather than redis-py's ConnectionError."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._to_governor = Dispatch(self)

    def enqueue(self, message, *, delay=None):
        if message.queue_name != GOVERNOR_QUEUE or delay is not None:
            return super().enqueue(message, delay=delay)
        return self._to_governor.send([(message, None)])[0]


def make_broker(redis_url: str, **overrides) -> RedisBroker:
    options = {"heartbeat_timeout": HEARTBEAT_TIMEOUT_MS, "maintenance_chance": MAINTENANCE_CHANCE,
               "dead_message_ttl": DEAD_MESSAGE_TTL_MS, **overrides}
    broker = Broker(url=redis_url, **options)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from metrics.dramatiq_seconds import DramatiqSeconds

        broker.add_middleware(DramatiqSeconds())  # Dramatiq's own metrics, in seconds, for /metrics
    return broker
