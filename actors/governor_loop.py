"""The governor process's own consumer loop: many messages, one write, on Dramatiq's public API.

Dramatiq's worker hands a consumer one message at a time, and each then costs its own fenced write
and snapshot. Here the governor takes what is waiting on its queue with Dramatiq's public consumer
(``Broker.consume``; up to ``batch_max`` messages, until ``next()`` returns None), applies them all
to the policy in memory, decides once, writes once under its lease (the state and an outbox of the
grants and rejections to send: :mod:`actors.governor_host`), sends the outbox with
``Broker.enqueue``, then acknowledges each applied message (``Consumer.ack``). A crash anywhere
before the acknowledgements leaves the messages unacknowledged, so they are delivered again (and
repeated messages change nothing). A batch that cannot be finished (the lease lost, an error) is
handed back at once (``Consumer.requeue``). A message that can never be applied (malformed, or one
whose step failed ``MAX_ATTEMPTS`` times) is dead-lettered with ``Consumer.nack``: Dramatiq keeps it
for ``DEAD_MESSAGE_TTL_MS`` (``actors.broker``), visible and out of the way.

If a command's reply may have been lost (Redis connection error), this process cannot tell which
messages its fetch moved to its unacknowledged set, and Dramatiq offers no public way to ask. So it
drops its broker and consumer and makes fresh ones (a new broker id); the old id no longer beats, and
once its heartbeat is ``HEARTBEAT_TIMEOUT_MS`` (15 s, ``actors.broker``) old, Dramatiq's own
maintenance puts its unacknowledged messages back on the queue.

A process without the lease does not consume at all: it stands by (its consumer closed, what it held
handed back) and checks the lease once a second. The leader renews its lease at the top of every
step once a third of it has passed (an idle step comes at least every ``POLL_S``).

No delayed messages: the governor's wakes are its own (``wake_at`` in its state). When nothing is
waiting the loop waits on its doorbell (:mod:`actors.doorbell`), rung after every undelayed message
enqueued for it, until the earlier of its wake and the next look at the queue (``POLL_S``). The last
``2 * REDIS_TICK_S`` before a wake are napped, since Redis times a blocked command out only on its
clock tick. The scheduler's undelayed ``wake`` message still makes the governor decide at once.
"""

from __future__ import annotations

import logging

import redis
from dramatiq.errors import BrokerConnectionError

from actors.broker import close_broker
from actors.doorbell import QUEUE
from actors.ledger import Ops
from actors.messages import MalformedMessage

log = logging.getLogger(__name__)

STANDBY_POLL_S = 1.0
MAX_ATTEMPTS = 3
POLL_S = 0.5                   # the queue is looked at this often at least, bell or not
REDIS_TICK_S = 0.1             # Redis times blocked commands out on its clock tick (hz 10, its default)
# The consumer's idle timeout caps the nap ``next()`` takes when a fetch finds nothing: Dramatiq naps
# int(timeout * uniform(0.5, 1)) ms at most, so 1 ms means no nap; the loop waits on its doorbell.
FETCH_NAP_CAP_MS = 1
# A reply from the consumer may have been lost: Dramatiq's consumer raises ConnectionClosed (a
# BrokerConnectionError) for a dropped connection, and a timeout comes through as redis-py's own.
# A dropped connection of the governor's ledger or of a send (redis-py's ConnectionError) cannot have
# moved messages unseen: the batch is handed back, and only if that fails is the broker replaced.
LOST_REPLY = (BrokerConnectionError, redis.TimeoutError)


class GovernorLoop:
    def __init__(self, rt, stop, doorbell, *, new_broker, batch_max: int = 256):
        self.rt, self.host, self.stop, self.doorbell = rt, rt.host, stop, doorbell
        self.new_broker = new_broker    # () -> a fresh broker: after a reply may have been lost
        self.batch_max = batch_max
        self.consumer = None
        self.batch: list = []           # fetched and not yet acknowledged, nacked or handed back
        self.failures: dict[str, int] = {}
        self._standing_by = False

    # -- the consumer ---------------------------------------------------------------------------
    def _consumer(self):
        if self.consumer is None:
            self.consumer = self.host.broker.consume(QUEUE, prefetch=self.batch_max, timeout=FETCH_NAP_CAP_MS)
        return self.consumer

    def _hand_back(self) -> None:
        """Give the batch back to the queue now (Consumer.requeue), and drop the consumer: Dramatiq's
        requeue puts the messages back on the queue but still counts them against the consumer's
        prefetch (only ack and nack release them), so a consumer that handed back a full batch would
        never fetch again. A fresh consumer starts from nothing; the requeued messages are fetched
        anew. If the requeue fails (Redis gone), the broker is replaced, and Dramatiq's maintenance
        requeues what the old one held."""
        batch, self.batch = self.batch, []
        if not batch or self.consumer is None:
            return
        consumer, self.consumer = self.consumer, None
        try:
            consumer.requeue(batch)
            consumer.close()
        except Exception as exc:
            log.warning("could not hand %d messages back (%s); they return once this broker's heartbeat "
                        "is stale", len(batch), exc)
            self._renew_broker()

    def _close_consumer(self) -> None:
        self._hand_back()
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None

    def _renew_broker(self) -> None:
        """Drop the broker and its consumer for fresh ones (a new broker id): whatever the old id
        fetched and never acknowledged goes back on the queue by Dramatiq's maintenance once the
        old id's heartbeat is stale."""
        old, self.consumer, self.batch = self.host.broker, None, []
        self.host.broker = self.new_broker()
        try:
            close_broker(old)
        except Exception as exc:  # a broker whose Redis is gone may fail to close: it is dropped anyway
            log.debug("closing the old broker failed: %s", exc)
        log.warning("governor %s uses a new broker; the old one's unacknowledged messages return once its "
                    "heartbeat is stale", self.host.ledger.holder[:8])

    def failed_step(self, exc: BaseException) -> None:
        """After a step raised: drop the state (it reloads from Redis) and hand the batch back; if
        a reply from Redis may have been lost, start afresh on a new broker."""
        self.host.forget()
        if isinstance(exc, LOST_REPLY):
            self._renew_broker()
        else:
            self._hand_back()

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self.step()
                except Exception as exc:
                    log.exception("governor loop: the step failed; state reloads from Redis")
                    self.failed_step(exc)
                    self.stop.wait(1.0)
        finally:
            try:
                self._close_consumer()
            except Exception:
                log.warning("could not close the consumer; what it held returns by Dramatiq's maintenance")
            try:
                if self.host.ledger.release():
                    log.info("governor %s gave its lease up", self.host.ledger.holder[:8])
            except Exception:  # Redis gone: the lease runs out by itself
                log.warning("could not give the lease up; it runs out in %d s", self.host.ledger.lease_ms // 1000)

    def step(self) -> None:
        now = self.host.clock_ms()
        if not self.host.begin(now):
            if not self._standing_by:
                log.info("governor %s stands by: %s holds the lease",
                         self.host.ledger.holder[:8], self.host.ledger.leader())
                self._standing_by = True
            self._close_consumer()
            self.stop.wait(STANDBY_POLL_S)
            return
        self._standing_by = False
        batch = self._fetch()
        if batch or self.host.wake_due(now):
            self._apply(batch, now)
        elif not self.stop.is_set():
            self._idle()

    def _fetch(self) -> list:
        consumer, batch = self._consumer(), self.batch
        while len(batch) < self.batch_max:
            message = next(consumer)
            if message is None:
                break
            batch.append(message)
        return batch

    def _idle(self) -> None:
        """Nothing to apply: wait for the doorbell until the next look at the queue or the wake."""
        now = self.host.clock_ms()
        wake = self.host.books.get("wake_at")
        until_wake = (wake - now) / 1000 if wake is not None else float("inf")
        if until_wake < 2 * REDIS_TICK_S:  # BLPOP would time out up to a tick late: nap exactly
            self.stop.wait(max(0.0, until_wake))
            return
        self.doorbell.wait(min(POLL_S, until_wake - REDIS_TICK_S))

    def _dead_letter(self, message) -> None:
        self.batch.remove(message)
        self.consumer.nack(message)
        self.failures.pop(message.message_id, None)

    def _apply(self, batch: list, now: int) -> None:
        ops, applied = Ops(), []
        for message in list(batch):
            try:
                kind, body = message.args
                self.host.apply(kind, body, now, ops)
            except (MalformedMessage, ValueError, TypeError) as exc:
                log.error("MalformedMessage dead-lettered (%s %s): %s", message.actor_name, message.message_id, exc)
                self._dead_letter(message)
                continue
            except Exception:
                attempts = self.failures.get(message.message_id, 0) + 1
                self.failures[message.message_id] = attempts
                if attempts >= MAX_ATTEMPTS:  # a poison message: out of the way, so the rest can go on
                    log.exception("dead-lettering message %s after %d failed attempts", message.message_id, attempts)
                    self._dead_letter(message)
                raise  # reload the state and try the batch again
            applied.append(message)
        if not self.host.finish(now, ops):
            self._hand_back()  # the lease is gone: hand the whole batch back, unacknowledged
            return
        for message in applied:
            self.consumer.ack(message)
            self.failures.pop(message.message_id, None)
        self.batch = []
        if len(self.failures) > 10_000:
            self.failures.clear()
