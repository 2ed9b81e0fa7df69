"""A governor loop on a real redis-server with an injected clock, and what the tests read of Redis,
all through Dramatiq's public API (``Broker.consume``, ``Broker.join``) and the governor's own keys."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from dramatiq import Message
from dramatiq.errors import QueueJoinTimeout

from actors.broker import make_broker
from actors.doorbell import Doorbell
from actors.governor_host import GovernorHost
from actors.governor_loop import GovernorLoop
from actors.ledger import Ledger
from actors.messages import to_governor
from governor.config import GovernorConfig
from keepa_api.tokens import Envelope

NOW = int(time.time() * 1000)


def make_loop(redis_url: str, *, holder: str = "me", token_source=None, clock=None, config=None,
              doorbell=None, stop=None, batch_max: int = 256) -> GovernorLoop:
    broker = make_broker(redis_url)
    clock = clock or SimpleNamespace(ms=NOW)
    token_source = token_source or (lambda: Envelope(clock.ms, 1_000, 60_000, 100))
    host = GovernorHost(Ledger(broker.client, holder=holder), broker, config or GovernorConfig(),
                        token_source, clock_ms=lambda: clock.ms)
    if stop is None:
        stop = threading.Event()
        stop.set()   # the loop never waits when idle: the test drives it step by step
    loop = GovernorLoop(SimpleNamespace(host=host), stop, doorbell or Doorbell(redis_url, max_wait_s=30.0),
                        new_broker=lambda: make_broker(redis_url), batch_max=batch_max)
    loop.clock = clock
    return loop


def close_loop(loop: GovernorLoop) -> None:
    loop.host.close()
    loop.host.broker.close()
    if isinstance(loop.doorbell, Doorbell):
        loop.doorbell.close()


def request(rid: str, cls: str = "commit") -> Message:
    return to_governor("request", {"id": rid, "cls": cls, "units": 1, "payload": {"asins": ["B000000001"]}})


def ask(broker, *rids: str) -> None:
    for rid in rids:
        broker.enqueue(request(rid))


def take(broker, queue: str) -> list:
    """Every message waiting on ``queue``, taken off it (fetched and acknowledged) by a consumer of
    its own, in queue order."""
    consumer = broker.consume(queue, prefetch=10_000, timeout=1)
    taken = []
    while (message := next(consumer)) is not None:
        consumer.ack(message)
        taken.append(message)
    consumer.close()
    return taken


def settled(broker, queue: str) -> bool:
    """True when ``queue`` holds no message at all, waiting or fetched and unacknowledged by anyone
    (``Broker.join``: Dramatiq counts the bodies it still keeps)."""
    try:
        broker.join(queue, interval=1, timeout=200)
        return True
    except QueueJoinTimeout:
        return False
