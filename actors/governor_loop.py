"""The governor process's own consumer loop: many messages, one write.

Dramatiq's worker hands the governor one message at a time, and each then costs its own fenced
write, snapshot and acknowledgement. Here the governor drains what is waiting on its queue (up to
``batch_max`` messages), applies them all to the policy in memory, decides once, writes once under
its lease, sends the grants, and only then acknowledges the batch: a crash anywhere before the write
leaves every message unacknowledged, so Dramatiq delivers it again (and repeated messages change
nothing). A process without the lease does not consume at all: it stands by and checks the lease
once a second, so a standby can never hold messages back.

Delayed messages (wakes, back-off retries) arrive on ``governor.DQ``; like Dramatiq's own worker,
the loop keeps them unacknowledged until due, then moves them to ``governor``.
"""

from __future__ import annotations

import heapq
import logging
import time

from dramatiq.common import dq_name

from actors.ledger import Ops
from actors.messages import MalformedMessage

log = logging.getLogger(__name__)

QUEUE = "governor"
STANDBY_POLL_S = 1.0
MAX_ATTEMPTS = 3
DQ_POLL_S = 0.05


class GovernorLoop:
    def __init__(self, rt, stop, *, batch_max: int = 256, poll_ms: int = 5):
        self.rt, self.host, self.stop = rt, rt.host, stop
        self.batch_max, self.poll_ms = batch_max, poll_ms
        self.main = self.delayed = None
        self.held: list = []          # (eta_ms, seq, message) from the delay queue, unacked until due
        self._seq = 0
        self.failures: dict[str, int] = {}
        self._standing_by = False
        self._dq_polled = 0.0

    # -- consumers ------------------------------------------------------------------------------
    def _open(self) -> None:
        if self.main is None:
            self.main = self.rt.broker.consume(QUEUE, prefetch=self.batch_max, timeout=self.poll_ms)
            self.delayed = self.rt.broker.consume(dq_name(QUEUE), prefetch=64, timeout=self.poll_ms)

    def _close(self) -> None:
        """Give every unacknowledged message back to its queue."""
        for consumer in (self.main, self.delayed):
            if consumer is not None:
                try:
                    consumer.close()
                except Exception:  # Redis gone: its maintenance requeues them after the heartbeat
                    log.exception("could not hand messages back; Redis will requeue them")
        self.main = self.delayed = None
        self.held = []

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self.step()
                except Exception:
                    log.exception("governor loop: the step failed; state reloads from Redis")
                    self.host.forget()
                    self._close()
                    self.stop.wait(1.0)
        finally:
            self._close()

    def step(self) -> None:
        now = self.host.clock_ms()
        if not self.host.begin(now):
            if not self._standing_by:
                log.info("governor %s stands by: %s holds the lease",
                         self.host.ledger.holder[:8], self.host.ledger.leader())
                self._standing_by = True
            self._close()
            self.stop.wait(STANDBY_POLL_S)
            return
        self._standing_by = False
        self._open()
        if time.monotonic() - self._dq_polled >= DQ_POLL_S:
            self._dq_polled = time.monotonic()
            self._move_due_delayed(now)
        batch = self._gather()
        wake = self.host.host.get("wake_at")
        if not batch and (wake is None or wake > now):
            return
        self._apply(batch, now)

    def _gather(self) -> list:
        batch = []
        while len(batch) < self.batch_max:
            message = next(self.main)
            if message is None:
                break
            batch.append(message)
        return batch

    def _move_due_delayed(self, now: int) -> None:
        while True:
            message = next(self.delayed)
            if message is None:
                break
            self._seq += 1
            heapq.heappush(self.held, (message.options.get("eta", 0), self._seq, message))
        while self.held and self.held[0][0] <= now:
            _, _, message = heapq.heappop(self.held)
            self.rt.broker.enqueue(message.copy(queue_name=QUEUE))
            self.delayed.ack(message)

    def _apply(self, batch: list, now: int) -> None:
        ops = Ops()
        for message in batch:
            try:
                kind, body = message.args
                self.host.apply(kind, body, now, ops)
            except (MalformedMessage, ValueError, TypeError) as exc:
                log.error("MalformedMessage dropped (%s %s): %s", message.actor_name, message.message_id, exc)
            except Exception:
                attempts = self.failures.get(message.message_id, 0) + 1
                self.failures[message.message_id] = attempts
                if attempts >= MAX_ATTEMPTS:  # a poison message: drop it so the rest can go on
                    log.exception("dropping message %s after %d failed attempts", message.message_id, attempts)
                    self.main.ack(message)
                raise  # reload the state and try the batch again
        if not self.host.finish(now, ops):
            self._close()  # the lease is gone: hand the whole batch back, unacknowledged
            return
        for message in batch:
            self.main.ack(message)
            self.failures.pop(message.message_id, None)
        if len(self.failures) > 10_000:
            self.failures.clear()

