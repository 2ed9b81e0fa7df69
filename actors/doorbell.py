"""The governor's doorbell: putting a message on the governor's queue rings it, and the governor,
finding its queue empty, blocks on it instead of polling.

Dramatiq's Redis queues cannot be waited on (a fetch is a Lua script that returns at once), so a
governor that only fetched would poll: every millisecond to keep its latency low, ~0.15 of a core
doing nothing.

The bell is a Redis list of ours kept to one item. :class:`RingOnEnqueue`, a Dramatiq middleware
every process's broker carries (:func:`actors.broker.make_broker`), pushes onto it in its public
``after_enqueue`` hook whenever an undelayed message was put on the governor's queue (one round trip
more for the sender). The governor, when a fetch finds nothing, waits on the list with ``BLPOP``,
which takes the bell. No wake-up is lost: a bell is pushed after its message, so a bell the governor
took belongs to a message its next fetch finds. A bell for a message already fetched costs one empty
fetch. Messages that arrive without a bell (those Dramatiq's maintenance requeues from a dead
process) are found by the fetch the governor makes when its wait times out
(:class:`actors.governor_loop.GovernorLoop` bounds it).

The bell only saves time: if ringing fails the message is still queued and found by that fetch; if
waiting on it fails (Redis gone), the governor naps instead and its next fetch meets the failure,
which the loop already handles.
"""

from __future__ import annotations

import logging
import time

import dramatiq
import redis

from actors.messages import GOVERNOR_QUEUE
from keepa_base.redis_keys import GOVERNOR_PREFIX

log = logging.getLogger(__name__)

BELL_KEY = GOVERNOR_PREFIX + "bell"
QUEUE = GOVERNOR_QUEUE


class RingOnEnqueue(dramatiq.Middleware):
    """The senders' side: ring after an undelayed message was enqueued for the governor."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def after_enqueue(self, broker, message, delay) -> None:
        if message.queue_name != QUEUE or delay is not None:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(BELL_KEY, "1")
            pipe.ltrim(BELL_KEY, 0, 0)
            pipe.execute()
        except redis.RedisError as exc:  # the message is queued: the governor's next poll finds it
            log.warning("could not ring the governor's doorbell (%s); it finds the message at its next poll", exc)


class Doorbell:
    """The governor's side: wait for the bell when a fetch found nothing, clear it on waking."""

    def __init__(self, redis_url: str, max_wait_s: float = 0.5):
        # BLPOP holds its connection for the whole wait: a client of its own, never the broker's
        # (TLS and unix sockets as the URL says), whose socket timeout outlasts the longest wait by
        # a second: a half-open connection holds the governor that long at most
        self.client = redis.Redis.from_url(redis_url, socket_timeout=max_wait_s + 1.0)
        self.max_wait_s = max_wait_s
        self._failing = False

    def wait(self, timeout_s: float) -> bool:
        """Block until the bell rings or ``timeout_s`` (at most ``max_wait_s``) passes; True if it
        rang. The bell is clear afterwards either way (BLPOP took it). Redis times the wait out on its
        clock tick, so it may last up to ~0.1 s longer than asked."""
        timeout_s = min(timeout_s, self.max_wait_s)
        if timeout_s <= 0:
            return False
        try:
            rang = self.client.blpop([BELL_KEY], timeout=timeout_s) is not None
        except redis.RedisError as exc:
            if not self._failing:
                log.warning("cannot wait on the governor's doorbell (%s); napping instead", exc)
            self._failing = True
            time.sleep(timeout_s)
            return False
        self._failing = False
        return rang

    def close(self) -> None:
        self.client.connection_pool.disconnect()
