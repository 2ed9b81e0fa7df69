"""The governor's doorbell: putting a message on the governor's queue rings it, and the governor,
finding its queue empty, blocks on it instead of polling.

Dramatiq's Redis queues cannot be waited on (a fetch is a Lua script that returns at once), so the
governor loop used to fetch every millisecond while busy and every 5 ms when idle: 0.13-0.17 of a
core in the ingest bench, where its own work costs ~0.02, and ~200 fetches a second doing nothing.

The bell is a Redis list kept to one item. The script that puts messages on a queue
(:data:`actors.dispatch.SEND_AND_ACK_LUA`) pushes onto it when one of them is for the governor, in
the same round trip; :func:`actors.broker.make_broker`'s broker sends every undelayed message for the
governor through that script. The governor, when a fetch finds nothing, waits on the list with
``BLPOP``, which takes the bell. No wake-up is lost: a bell is pushed with or after its message, so
a bell the governor took belongs to a message its next fetch finds. A bell for a message already
fetched costs one empty fetch. Messages that arrive without a bell (delayed ones, those Redis
maintenance requeues from a dead process) are found by the fetch the governor makes when its wait
times out (:class:`actors.governor_loop.GovernorLoop` bounds it).

The bell only saves time: if waiting on it fails (Redis gone), the governor naps instead and its
next fetch meets the failure, which the loop already handles.
"""

from __future__ import annotations

import logging
import time

import redis

log = logging.getLogger(__name__)

BELL_KEY = "keepa-deals:governor:bell"
QUEUE = "governor"


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
