"""The governor host: the imperative shell around :class:`governor.policy.Governor`.

Driven by :class:`actors.governor_loop.GovernorLoop` (one process, one thread, not a Dramatiq
actor): take the lease, load the state if this process just became leader (first sending what a
previous leader wrote to its outbox and never sent, then resynchronising from Keepa's free
``/token``), apply a batch of messages to the policy with ``now``, decide once, then write in one
atomic script what changed (fenced by the lease) together with an outbox of the grants and
rejections to send, send those with Dramatiq's public ``Broker.enqueue`` and take them out of the
outbox. A crash between the write and the sends loses nothing: the next leader sends the outbox
again, each message with the Dramatiq message id it was written with, and a worker drops a grant it
has already claimed (:mod:`actors.grant_claims`), so a grant sent twice is paid for once. The
governor's wakes (the next possible grant) are its own: ``wake_at`` in its state, kept by the loop.
A process without the lease stands by and grants nothing.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from dramatiq import Message

from actors.grant_claims import attempt_alive, read_claims
from actors.ledger import Ledger, Ops
from actors.messages import ENDPOINTS, GRANT_ACTOR, OUTCOMES, REJECTED_ACTOR, MalformedMessage, envelope_from, field
from governor.clock import ClockOffset
from governor.config import GovernorConfig
from governor.model import CLASSES, Request
from governor.persist import core_to_json, grant_to_json, request_to_json, restore
from governor.snapshot import WaitHistogram, snapshot
from governor.spend import SpendWindow

log = logging.getLogger(__name__)

STALE_GRANT_MS = 120_000       # a grant with no settle for this long is looked at again
SNAPSHOT_EVERY_MS = 1_000
# grants sent at once: in `python -m bench grants` (1,000 requests a second on a loaded 2-core
# machine) sending 8 at a time instead of one by one cut the request-to-grant p50 from 21-121 ms to
# 12-24 ms and the p99 from 70-317 ms to 41-74 ms (three alternating runs each)
SEND_THREADS = 8


class GovernorHost:
    def __init__(self, ledger: Ledger, broker, config: GovernorConfig, token_source, clock_ms=None):
        self.ledger, self.broker, self.config = ledger, broker, config
        self.token_source = token_source          # () -> Envelope (Keepa's free /token)
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.gov = None
        self.keepa_clock = ClockOffset()
        self.payloads: dict[str, dict] = {}
        self.books: dict = {}   # the host's own books (persisted as core["host"]): counters, last error, wake time
        self.waits = WaitHistogram()
        self.spend = SpendWindow()
        self._snapshot_ms = 0
        self._lease_ms = 0          # when (host clock) this process last renewed or took the lease
        self._outbox: list[Message] = []   # the batch's grants and rejections, written, then sent
        self._senders: ThreadPoolExecutor | None = None

    # -- leadership and state -------------------------------------------------------------------
    def _take_over(self, now: int) -> None:
        self.send_unsent()   # before anything else: what the previous leader wrote and never sent
        core, pending, inflight, done = self.ledger.load()
        self.gov = restore(self.config, core.get("gov") if core else None, pending,
                           [d["grant"] for d in inflight], done)
        self.payloads = {d["id"]: d.get("payload", {}) for d in pending}
        self.payloads.update({d["grant"]["request"]["id"]: d.get("payload", {}) for d in inflight})
        self.books = (core or {}).get("host", {"seq": 0, "calls_total": {}, "last_error": None,
                                               "wake_at": None, "resent_ms": {}})
        self.waits = WaitHistogram.from_json(self.books.get("waits", {}))
        self.spend = SpendWindow.from_json(self.books.get("spent_by_minute"))
        self.books["leader_since_ms"] = now
        # readings start afresh with each take-over: the clock they were taken on may have been
        # stepped since (or been another host's); the /token call is the first reading
        self.keepa_clock = ClockOffset()
        envelope = self.token_source()
        self._observe_clock(self.clock_ms(), envelope)
        self.gov.sync(envelope, now)
        log.info("governor %s took the lease: %d pending, %d in flight, balance %s",
                 self.ledger.holder[:8], self.gov.pending(), len(self.gov.in_flight), self.gov.balance)

    def begin(self, now: int) -> bool:
        """Make sure this process leads and holds the state; False means stand by.

        A leader renews its lease every third of it, whether or not it has anything to write (an idle
        governor writes only when woken, once a minute or less, and a 30 s lease would pass to the
        standby between wakes). If the lease ran out meanwhile, the state is dropped and taken over
        again from Redis, since another governor may have written in between."""
        renewal_due = not 0 <= now - self._lease_ms < self.ledger.lease_ms // 3   # or the clock went back
        if self.gov is not None and renewal_due:
            if self.ledger.renew():
                self._lease_ms = now
            else:
                log.warning("governor %s lost its lease (%s holds it); reloading",
                            self.ledger.holder[:8], self.ledger.leader())
                self.forget()
        if self.gov is None:
            if not self.ledger.acquire():
                return False
            self._lease_ms = now
            self._take_over(now)
        return True

    def apply(self, kind: str, body: dict, now: int, ops: Ops) -> None:
        """Apply one message to the policy in memory; nothing is written until :meth:`finish`."""
        handler = {"request": self._request, "settle": self._settle, "wake": self._wake}.get(kind)
        if handler is None:
            raise MalformedMessage(f"governor: unknown message kind {kind!r}")
        handler(body, now, ops)

    def finish(self, now: int, ops: Ops) -> bool:
        """Decide, write what changed and the outbox under the lease, then send the outbox. False:
        the lease was lost (nothing written or sent). Raises if the write or a send failed (the
        state is dropped; whatever was written and not sent goes out at the next take-over)."""
        try:
            return self._decide(now, ops)
        except BaseException:
            self.forget()
            raise

    def forget(self) -> None:
        """Drop the in-memory state (nothing unwritten survives); it is reloaded from Redis."""
        self.gov, self._outbox = None, []

    def send_unsent(self) -> int:
        """Send what the outbox still holds, each message with its Dramatiq message id, and take it
        out of the outbox; how many. Its receivers drop a copy of a grant already claimed."""
        unsent = self.ledger.unsent()
        if unsent:
            log.warning("governor %s sends %d messages a previous leader wrote and did not send",
                        self.ledger.holder[:8], len(unsent))
            self._send(unsent)
        return len(unsent)

    def _send(self, messages: list[Message]) -> None:
        """Hand ``messages`` to Dramatiq (``Broker.enqueue``, one round trip each, ``SEND_THREADS``
        at a time: a broker is safe to share between threads, and under load most of a round trip
        is waiting on Redis), then take them out of the outbox. If one fails this raises, and the
        outbox keeps them all for the next take-over."""
        shares = [messages[i::SEND_THREADS] for i in range(min(SEND_THREADS, len(messages)))]
        if len(shares) == 1:
            self._enqueue_all(shares[0])
        elif shares:
            if self._senders is None:
                self._senders = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="governor-send")
            for _ in self._senders.map(self._enqueue_all, shares):   # one task a thread, not a message
                pass
        self.ledger.sent([message.message_id for message in messages])

    def _enqueue_all(self, messages: list[Message]) -> None:
        for message in messages:
            self.broker.enqueue(message)

    def close(self) -> None:
        """Stop the sending threads (the process is stopping)."""
        if self._senders is not None:
            self._senders.shutdown(wait=True)
            self._senders = None

    # -- messages -------------------------------------------------------------------------------
    def _request(self, body, now, ops) -> None:
        where = "governor request"
        rid, cls = field(body, "id", str, where), field(body, "cls", str, where)
        if cls not in CLASSES:
            raise MalformedMessage(f"{where}: cls must be one of {CLASSES}, got {cls!r}")
        units = body.get("units", 1)
        if not isinstance(units, int) or isinstance(units, bool) or not 1 <= units <= 100:
            raise MalformedMessage(f"{where}: units must be 1..100, got {units!r}")
        payload = body.get("payload", {})
        if not isinstance(payload, dict):
            raise MalformedMessage(f"{where}: payload must be an object")
        req = Request(rid, cls, units, now, None, bool(body.get("continues", False)))
        before = self.gov.pending()
        rejection = self.gov.request(req, now)
        if rejection is not None:
            self._reject(rejection, payload, ops)
        elif self.gov.pending() > before:
            self.books["seq"] = self.books.get("seq", 0) + 1
            self.payloads[rid] = payload
            entry = {**request_to_json(req), "seq": self.books["seq"], "payload": payload}
            ops.pending_add.append([rid, json.dumps(entry)])

    def _settle(self, body, now, ops) -> None:
        where = "governor settle"
        gid = field(body, "grant_id", str, where)
        endpoint, outcome = body.get("endpoint", "?"), body.get("outcome", "?")
        if endpoint not in ENDPOINTS or outcome not in OUTCOMES:
            raise MalformedMessage(f"{where}: endpoint/outcome must be in {ENDPOINTS}/{OUTCOMES}")
        envelope = envelope_from(body, where)
        if envelope:
            received = body.get("received_ms", now)   # when the worker read the answer (older ones: now)
            if not isinstance(received, int) or isinstance(received, bool):
                raise MalformedMessage(f"{where}: received_ms must be an integer (ms), got {received!r}")
            self._observe_clock(received, envelope)
        done = self.gov.settle(gid, envelope, now) if envelope else self.gov.release(gid, now)
        if not done:
            if envelope:
                self.gov.sync(envelope, now)
            return
        if envelope:
            self.spend.add(now, envelope.tokens_consumed)
        calls = self.books.setdefault("calls_total", {}).setdefault(endpoint, {})
        calls[outcome] = calls.get(outcome, 0) + 1
        if outcome != "ok":
            self.books["last_error"] = {"at_ms": now, "endpoint": endpoint, "outcome": outcome,
                                       "message": str(body.get("message", ""))[:300]}
        self.payloads.pop(gid, None)
        self.books.get("resent_ms", {}).pop(gid, None)
        ops.inflight_del.append(gid)
        ops.done_add.append([gid, now])
        ops.done_before, ops.done_keep = now - self.config.remember_ms, self.config.remember_done

    def _observe_clock(self, received_ms: int, envelope) -> None:
        """One reading of how far this host's clock is ahead of Keepa's (see governor.clock); the
        policy then reckons refills on Keepa's clock."""
        self.gov.clock_offset_ms = self.keepa_clock.observe(received_ms, envelope.timestamp_ms)

    def _wake(self, body, now, ops) -> None:
        """The scheduler's nudge (undelayed, once a Keepa minute): a decision at once, whatever
        ``wake_at`` says. The governor's own wakes need no message (:meth:`wake_due`)."""

    def wake_due(self, now: int) -> bool:
        """The next possible grant is due (``wake_at``, set by the last decision): decide now."""
        wake = self.books.get("wake_at")
        return wake is not None and wake <= now

    def _reject(self, rejection, payload, ops) -> None:
        rid = rejection.request.id
        ops.pending_del.append(rid)
        ops.done_add.append([rid, self.clock_ms()])
        self._outbox.append(Message(queue_name=rejection.request.cls, actor_name=REJECTED_ACTOR,
                                    args=(rid, rejection.request.cls, payload, rejection.reason),
                                    kwargs={}, options={}))
        log.warning("rejected %s: %s", rid, rejection.reason)

    # -- the decision ---------------------------------------------------------------------------
    def _decide(self, now: int, ops: Ops) -> bool:
        decision = self.gov.decide(now)
        for rejection in decision.rejections:
            self._reject(rejection, self.payloads.pop(rejection.request.id, {}), ops)
        outbox = self._outbox
        for grant in decision.grants:
            rid = grant.id
            payload = self.payloads.get(rid, {})
            self.waits.observe(grant.request.cls, (now - grant.request.created_ms) / 1000)
            ops.pending_del.append(rid)
            ops.inflight_add.append([rid, json.dumps({"grant": grant_to_json(grant), "payload": payload})])
            outbox.append(self._grant_message(grant, payload))
        self._resend_stale(now, outbox)
        scheduled = self.books.get("wake_at")
        if scheduled is not None and scheduled <= now:
            scheduled = None                      # due: this decision is that wake
        wake = decision.wake_at_ms
        if wake is not None and (scheduled is None or wake < scheduled):
            scheduled = max(wake, now + 1)        # never due at once again: no busy loop
        self.books["wake_at"] = scheduled
        self.books["waits"] = self.waits.to_json()
        self.books["spent_by_minute"] = self.spend.to_json()
        ops.core = json.dumps({"gov": core_to_json(self.gov), "host": self.books}, separators=(",", ":"))
        doc = self._snapshot_doc(now) if now - self._snapshot_ms >= SNAPSHOT_EVERY_MS else None
        if not self.ledger.commit(ops, doc, outbox):
            self.forget()
            log.info("governor %s lost the lease: %s holds it", self.ledger.holder[:8], self.ledger.leader())
            return False  # lost the lease mid-batch: nothing was written or sent
        self._lease_ms = now  # the commit renewed the lease
        if doc is not None:
            self._snapshot_ms = now
        self._outbox = []
        self._send(outbox)
        return True

    def _grant_message(self, grant, payload) -> Message:
        return Message(queue_name=grant.request.cls, actor_name=GRANT_ACTOR[grant.request.cls],
                       args=(grant.id, payload), kwargs={}, options={})

    def _resend_stale(self, now: int, outbox: list) -> None:
        """Look again at grants unsettled for ``STALE_GRANT_MS``, never resending blindly: a grant
        whose claim shows a live attempt (a slow call) or a finished one (its settle is on its way)
        is left alone; one nobody claimed (lost, or still on its queue) or whose attempt is gone
        (its worker died, or it raised where nothing retries it) is sent again, and that copy never
        calls twice: it finds the claim and does nothing, stores the kept answer, or releases the
        grant (:mod:`actors.grant_claims`). Logged once per ``STALE_GRANT_MS`` each."""
        resent = self.books.setdefault("resent_ms", {})
        stale = [gid for gid, grant in self.gov.in_flight.items()
                 if now - resent.get(gid, grant.granted_ms) >= STALE_GRANT_MS]
        if not stale:
            return
        claims = read_claims(self.ledger.redis, stale)
        for gid in stale:
            resent[gid] = now
            grant, claim = self.gov.in_flight[gid], claims[gid]
            age_s = (now - grant.granted_ms) // 1000
            if claim is not None and (not claim.open or attempt_alive(self.ledger.redis, claim.owner, now)):
                log.warning("grant %s has not settled in %d s: %s by worker %s, %s; not sent again", gid, age_s,
                            claim.state, claim.process[:8], "still at it" if claim.open else "its settle is on its way")
                continue
            log.warning("grant %s has not settled in %d s: %s; sending it again", gid, age_s,
                        "never claimed" if claim is None else f"{claim.state} by worker {claim.process[:8]}, gone")
            outbox.append(self._grant_message(grant, self.payloads.get(gid, {})))

    def _snapshot_doc(self, now: int) -> dict:
        doc = snapshot(self.gov, now, self.waits)
        doc["leader"] = {"id": self.ledger.holder, "since_ms": self.books.get("leader_since_ms")}
        doc["calls_total"] = self.books.get("calls_total", {})
        doc["last_error"] = self.books.get("last_error")
        doc["keepa_clock_offset_ms"] = self.gov.clock_offset_ms   # this host's clock less Keepa's
        doc["tokens_spent_by_minute"] = self.spend.to_json()
        return doc

    def write_snapshot(self, now: int) -> None:
        self.ledger.write_snapshot(self._snapshot_doc(now))
        self._snapshot_ms = now

