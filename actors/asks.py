"""What a worker sends the governor: requests, settles, and requests asked again after a failed call.

Actors never wait for tokens: they *ask* (a request the governor keeps until it can grant it) and
return; a grant runs the call, and its worker *settles* with Keepa's token envelope (or none, when
no call was made or its outcome is unknown), which the governor takes as the truth. A failed call is
asked for again after a wait (:func:`pipeline.driver.retry_delay_ms`): the wait is a delayed
``keepa_ask_again`` message on the class's own worker queue, which Dramatiq's worker holds until
due; its actor then sends the request to the governor at once, so the governor's queue never holds
a delayed message.
"""

from __future__ import annotations

import logging

from dramatiq import Message

from actors.messages import envelope_to, field, to_governor
from keepa_base.errors import KeepaError, MalformedResponse, NotEnoughTokens
from pipeline import driver

log = logging.getLogger(__name__)

ASK_AGAIN_ACTOR = "keepa_ask_again"   # declared once; runs on whichever worker queue holds its message


class Asks:
    """Mixed into :class:`actors.steps.Steps`, whose ``rt`` (the runtime) and ``tickets`` it uses."""

    def _to_governor(self, kind: str, body: dict) -> None:
        self.rt.broker.enqueue(to_governor(kind, body))

    def ask(self, rid: str, cls: str, payload: dict, units: int = 1, continues: bool = False) -> None:
        self._to_governor("request", {"id": rid, "cls": cls, "units": units, "continues": continues,
                                      "payload": payload})

    def settle(self, grant_id: str, endpoint: str, outcome: str, envelope=None, message: str = "") -> None:
        # received_ms: when this host read the answer (a little later: after storing it), which the
        # governor sets against Keepa's timestamp to learn how far the clocks differ (governor.clock)
        self._to_governor("settle", {"grant_id": grant_id, "endpoint": endpoint, "outcome": outcome,
                                     "envelope": envelope_to(envelope), "message": message,
                                     "received_ms": self.rt.clock_ms()})

    def _failed(self, grant_id: str, endpoint: str, exc: KeepaError) -> str:
        outcome = outcome_of(exc)
        self.settle(grant_id, endpoint, outcome, exc.envelope, str(exc))
        return outcome

    def _retry(self, rid: str, attempt: int, cls: str, payload: dict, exc: KeepaError, **kw) -> None:
        """Ask again after :func:`pipeline.driver.retry_delay_ms`: after a 429 when Keepa's refill
        is due, after anything else 1 s doubling per attempt up to 60 s. The wait is a delayed
        message on the class's own worker queue (Dramatiq's worker holds it until due), whose actor
        then sends the request to the governor at once (:meth:`ask_again`). A peek's ticket is touched
        at the re-ask's due time, so however long the wait, the sweep does not take it for lost."""
        refill_in = exc.envelope.refill_in_ms if isinstance(exc, NotEnoughTokens) and exc.envelope else None
        outcome, failures = outcome_of(exc), payload.get("failures", 0)
        delay = driver.retry_delay_ms(outcome, failures, refill_in)
        if cls == "peek":   # the re-ask is alive until it comes due: the scheduler's sweep counts from then
            self.tickets.touch(payload.get("ticket"), self.rt.clock_ms() + delay)
        body = {"id": f"{rid.rsplit(':', 1)[0]}:{attempt + 1}", "cls": cls, "units": kw.get("units", 1),
                "continues": kw.get("continues", False),
                "payload": {**payload, "attempt": attempt + 1, "failures": driver.failures_after(outcome, failures)}}
        self.rt.broker.enqueue(Message(queue_name=cls, actor_name=ASK_AGAIN_ACTOR, args=(body,), kwargs={},
                                       options={}), delay=delay)

    def ask_again(self, body: dict) -> None:
        """A delayed request has come due: send it to the governor, unless it is a peek whose ticket
        was dropped meanwhile (:mod:`actors.peek_tickets`: its claims went back in line)."""
        where = "ask again"
        rid, cls = field(body, "id", str, where), field(body, "cls", str, where)
        payload = field(body, "payload", dict, where)
        if cls == "peek" and not self.tickets.touch(payload.get("ticket"), self.rt.clock_ms()):
            log.warning("%s: its peek ticket %s is gone (its claims went back in line); not asked again",
                        rid, payload.get("ticket"))
            return
        self._to_governor("request", body)


def outcome_of(exc: KeepaError) -> str:
    """The settle's outcome for a failed call."""
    outcome = {429: "429", 402: "402", 400: "400", 404: "400", 405: "400"}.get(exc.status or 0)
    if outcome is None:
        outcome = "malformed" if isinstance(exc, MalformedResponse) else ("5xx" if exc.status else "timeout")
    return outcome
