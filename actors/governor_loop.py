"""The governor process's own consumer loop: many messages, one write, three round trips a batch.

Dramatiq's worker hands the governor one message at a time, and each then costs its own fenced
write, snapshot and acknowledgement. Here the governor takes what is waiting on its queue (up to
``batch_max`` messages, one fetch), applies them all to the policy in memory, decides once, writes
once under its lease, then sends the grants and acknowledges the batch in one pipeline
(:mod:`actors.dispatch`): a crash anywhere before the write leaves every message unacknowledged, so
it is delivered again (and repeated messages change nothing). A batch that cannot be finished (the
lease lost, an error) is handed back to the queue at once. A process without the lease does not
consume at all: it stands by and checks the lease once a second, so a standby never holds messages.
The leader renews its lease at the top of every step once a third of it has passed (steps come at
least every ``DQ_POLL_S`` even when idle), so the lease stays put between wakes however idle it is.

Delayed messages (wakes, back-off retries) arrive on ``governor.DQ``; like Dramatiq's own worker,
the loop keeps them unacknowledged until due, then moves them to ``governor``. When nothing is
waiting the loop waits on its doorbell (:mod:`actors.doorbell`), rung by every message enqueued for
it without a delay, until the next thing due: its own wake or a held message (on time: the last
``2 * REDIS_TICK_S`` are napped, since Redis times a blocked command out only on its clock tick),
or the next look at the delay queue (late by up to a tick, which back-off retries can afford).
"""

from __future__ import annotations

import heapq
import logging
import time

from dramatiq.common import dq_name

from actors.doorbell import QUEUE
from actors.ledger import Ops
from actors.messages import MalformedMessage

log = logging.getLogger(__name__)

DELAYED = dq_name(QUEUE)
STANDBY_POLL_S = 1.0
MAX_ATTEMPTS = 3
DQ_POLL_S = 0.1               # the delay queue is looked at this often, at most
HOLD_MAX = 256                 # delayed messages held unacknowledged until due, at most
REDIS_TICK_S = 0.1             # Redis times blocked commands out on its clock tick (hz 10, its default)


class GovernorLoop:
    def __init__(self, rt, stop, doorbell, *, batch_max: int = 256, monotonic=time.monotonic):
        self.rt, self.host, self.stop, self.doorbell = rt, rt.host, stop, doorbell
        self.dispatch = rt.host.dispatch
        self.batch_max = batch_max
        self.held: list = []          # (eta_ms, seq, message) from the delay queue, unacked until due
        self.unacked: list = []       # the batch being applied, acknowledged once written
        self.sweep = False            # a step failed: hand back all this process holds, next step
        self._seq = 0
        self.failures: dict[str, int] = {}
        self._standing_by = False
        self._dq_polled = 0.0
        self._monotonic = monotonic   # seconds; paces the delay-queue look (tests inject a clock)

    def _hand_back(self) -> None:
        """Give every unacknowledged message back to its queue now. (Whatever this process fetched
        stays in its ack set, which Redis maintenance requeues only once the process's heartbeat
        stops, so a live process must hand back itself: if Redis is gone, at a later step.)"""
        try:
            self.dispatch.requeue(QUEUE, self.unacked)
            self.dispatch.requeue(DELAYED, [m for *_, m in self.held])
        except Exception:
            log.exception("could not hand messages back; all this process holds goes back at a later step")
            self.sweep = True
        self.held, self.unacked = [], []

    def failed_step(self) -> None:
        """After a step raised: drop the state (it reloads from Redis), hand back what it fetched,
        and at the next step whatever else this process holds."""
        self.host.forget()
        self._hand_back()
        self.sweep = True

    def _sweep(self) -> None:
        """After a failure: hand back everything in this process's ack sets, which holds nothing
        now. A fetch whose reply was lost (Redis stopping mid-command) left messages there that this
        process never saw, and nothing else would ever requeue them while it lives."""
        returned = self.dispatch.requeue_all(QUEUE) + self.dispatch.requeue_all(DELAYED)
        self.sweep = False
        if returned:
            log.warning("handed back %d messages this process had fetched but not applied", returned)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self.step()
                except Exception:
                    log.exception("governor loop: the step failed; state reloads from Redis")
                    self.failed_step()
                    self.stop.wait(1.0)
        finally:
            self._hand_back()
            try:
                if self.host.ledger.release():
                    log.info("governor %s gave its lease up", self.host.ledger.holder[:8])
            except Exception:  # Redis gone: the lease runs out by itself
                log.warning("could not give the lease up; it runs out in %d s", self.host.ledger.lease_ms // 1000)

    def step(self) -> None:
        if self.sweep:
            self._sweep()
        now = self.host.clock_ms()
        if not self.host.begin(now):
            if not self._standing_by:
                log.info("governor %s stands by: %s holds the lease",
                         self.host.ledger.holder[:8], self.host.ledger.leader())
                self._standing_by = True
            self._hand_back()
            self.stop.wait(STANDBY_POLL_S)
            return
        self._standing_by = False
        wanted = [(QUEUE, self.batch_max)]
        if self._monotonic() - self._dq_polled >= DQ_POLL_S and len(self.held) < HOLD_MAX:
            self._dq_polled = self._monotonic()
            wanted.append((DELAYED, HOLD_MAX - len(self.held)))
        batch, *delayed = self.dispatch.fetch(wanted)
        self.unacked = batch
        moved = self._hold(delayed[0] if delayed else [], now)
        wake = self.host.host.get("wake_at")
        if batch or (wake is not None and wake <= now):
            self._apply(batch, now)
        elif not moved and not self.stop.is_set():  # moved ones are on the queue for the next fetch
            self._idle(wake)

    def _idle(self, wake: int | None) -> None:
        """Nothing to apply: wait for the doorbell until the next thing due."""
        now = self.host.clock_ms()
        timed = [(t - now) / 1000 for t in (wake, self.held[0][0] if self.held else None) if t is not None]
        until_timed = min(timed, default=float("inf"))
        if until_timed < 2 * REDIS_TICK_S:  # BLPOP would time out up to a tick late: nap exactly
            self.stop.wait(max(0.0, until_timed))
            return
        until_dq = DQ_POLL_S - (self._monotonic() - self._dq_polled)
        self.doorbell.wait(max(REDIS_TICK_S, min(until_timed - REDIS_TICK_S, until_dq)))

    def _hold(self, fetched: list, now: int) -> int:
        """Keep delayed messages until due; move those due to the governor queue. How many moved."""
        for message in fetched:
            self._seq += 1
            heapq.heappush(self.held, (message.options.get("eta", 0), self._seq, message))
        due = []
        while self.held and self.held[0][0] <= now:
            due.append(heapq.heappop(self.held)[2])
        if due:
            self.dispatch.send([(m.copy(queue_name=QUEUE), None) for m in due], [(DELAYED, m) for m in due])
        return len(due)

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
                    self.dispatch.send([], [(QUEUE, message)])
                raise  # reload the state and try the batch again
        if not self.host.finish(now, ops, [(QUEUE, message) for message in batch]):
            self._hand_back()  # the lease is gone: hand the whole batch back, unacknowledged
            return
        self.unacked = []
        for message in batch:
            self.failures.pop(message.message_id, None)
        if len(self.failures) > 10_000:
            self.failures.clear()
