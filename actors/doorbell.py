"""The governor's doorbell: a sender rings it after putting a message on the governor's queue, and
the governor, finding its queue empty, blocks on it instead of polling.

Dramatiq's Redis queues cannot be waited on (a fetch is a Lua script that returns at once), so the
governor loop used to fetch every millisecond while busy and every 5 ms when idle: 0.13-0.17 of a
core in the ingest bench, where its own work costs ~0.02, and ~200 fetches a second doing nothing.

Every process's broker carries :class:`RingOnEnqueue` (see :func:`actors.broker.make_broker`): after
Dramatiq has enqueued a message for the governor, it pushes onto a Redis list (kept to one item).
The governor, when a fetch finds nothing, waits on the list with ``BLPOP`` and clears it on waking,
before its next fetch. No wake-up is lost: a bell is always pushed after its message is on the
queue, so a bell the governor cleared belongs to a message its next fetch finds. A bell for a
message already fetched costs one empty fetch. Messages that arrive without a bell (delayed ones,
those Redis maintenance requeues from a dead process) are found by the fetch the governor makes
when its wait times out (:class:`actors.governor_loop.GovernorLoop` bounds it). The governor's own
broker does not ring: it only moves messages it will fetch next anyway.

The bell only saves time: if waiting on it fails (Redis gone), the governor naps instead and its
next fetch meets the failure, which the loop already handles.
"""

from __future__ import annotations

import logging
import time

import redis
from dramatiq import Middleware

log = logging.getLogger(__name__)

BELL_KEY = "keepa-deals:governor:bell"
QUEUE = "governor"


class RingOnEnqueue(Middleware):
    """Ring the governor's doorbell after each message enqueued for it without a delay."""

    def after_enqueue(self, broker, message, delay):
        if message.queue_name == QUEUE and not delay:
            # one bell is enough: the list never grows, even with no governor running to empty it
            broker.client.pipeline(transaction=False).lpush(BELL_KEY, 1).ltrim(BELL_KEY, 0, 0).execute()


class Doorbell:
    """The governor's side: wait for the bell when a fetch found nothing, clear it on waking."""

    def __init__(self, redis_url: str, max_wait_s: float = 1.0):
        # BLPOP holds its connection for the whole wait: a client of its own, never the broker's,
        # with a socket timeout longer than the longest wait (TLS and unix sockets as the URL says)
        self.client = redis.Redis.from_url(redis_url, socket_timeout=max_wait_s + 5.0)
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
