"""The peek and commit actors' calls: Keepa's /product, paid for once, decoded product by product.

A grant's call is made only under a fresh claim (:mod:`actors.grant_claims`); the answer is kept in
the claim before anything is stored, so a grant delivered again stores it instead of buying it again.
Each product of an answer stands alone: the good ones are stored, a malformed one is asked for again
alone at most twice (``MAX_PRODUCT_FAILURES``), then set aside until an operator replays it
(``keepa-deals replay-set-aside``). A call that keeps failing (5xx, timeouts) is asked for again at
most ``MAX_CALL_ATTEMPTS`` times in a row, then its ASINs are set aside too.

:class:`ProductCalls` is the base of :class:`actors.backfill.Backfill`; it uses the ``ask``,
``settle``, ``_retry`` and ``_failed`` of :class:`actors.asks.Asks`, and the ``tickets`` and
``claims`` of :class:`actors.steps.Steps`.
"""

from __future__ import annotations

import hashlib
import logging

from actors.asks import Asks
from actors.grant_claims import DONE, RELEASED, SKIP, STORE
from actors.messages import MalformedMessage, field
from actors.peek_tickets import OUTSTANDING_KEY
from actors.product_answer import ProductAnswer
from keepa_base.errors import BadKey, KeepaError, MalformedResponse, RequestRejected, TransientError
from pipeline import driver
from pipeline.driver import MAX_CALL_ATTEMPTS, MAX_PRODUCT_FAILURES

log = logging.getLogger(__name__)

__all__ = ["MAX_CALL_ATTEMPTS", "MAX_PRODUCT_FAILURES", "ProductCalls"]


class ProductCalls(Asks):
    def _asins(self, payload: dict, where: str) -> list[str]:
        asins = field(payload, "asins", list, where)
        if not asins or not all(isinstance(a, str) and len(a) == 10 for a in asins):
            raise MalformedMessage(f"{where}: asins must be a non-empty list of 10-character ASINs")
        return asins

    def _paid_answer(self, endpoint: str, grant_id: str, payload: dict, asins: list[str]):
        """The grant's paid-for /product answer and this attempt's claim token, or None when there is
        nothing to store. Keepa is called only under a fresh claim (:mod:`actors.grant_claims`): a copy
        of the grant whose answer was kept stores that answer; a copy that finds a live one at work,
        or the grant settled, does nothing; a copy whose predecessor died mid-call releases the
        grant (settled with no envelope) and asks again under a new id, never calling under this one."""
        begun = self.claims.begin(grant_id)
        if begun.action == SKIP:
            log.info("%s %s: %s by %s; no call made", endpoint, grant_id, begun.previous.state,
                     begun.previous.owner[:8])
            if endpoint == "peek" and begun.previous.state == DONE:
                # stored and settled: if the worker that did it died before closing the ticket, close it
                # now, or it would hold a window slot until the scheduler drops it an hour later
                self._peek_finished(payload.get("ticket"))
            return None
        try:  # whatever raises, the attempt ends: a later copy (a retry, a resend) judges its claim
            if begun.action == STORE:
                log.info("%s %s: its answer was paid for already; storing it, no call made", endpoint, grant_id)
                return ProductAnswer.from_json(begun.previous.answer), begun.token
            if begun.repeat:
                log.warning("%s %s: the attempt making this call is gone; released", endpoint, grant_id)
                self.settle(grant_id, endpoint, "timeout", None, "its attempt died mid-call: outcome unknown, released")
                # an unknown outcome is a failed call: asked again under a new id, within the same limit
                self._next_step(endpoint, grant_id, payload, asins, TransientError("outcome unknown"), "timeout")
                self.claims.finish(grant_id, begun.token, RELEASED)
                return None
            if endpoint == "peek" and not self.tickets.touch(payload.get("ticket"), self.rt.clock_ms()):
                # the scheduler dropped the ticket and returned its claims to line: another peek may
                # have them by now, so this one buys nothing (its reserved tokens go back)
                log.warning("peek %s: its ticket %s is gone (its claims went back in line); no call made",
                            grant_id, payload.get("ticket"))
                self.settle(grant_id, endpoint, "ok", None, "peek ticket gone: no call made")
                self.claims.finish(grant_id, begun.token)
                return None
            try:
                # a commit stores stats, title and the offer count, never the price history: history=0
                # costs the same tokens and spares Keepa, the wire and the decoder the 36 csv series
                rt = self.rt
                batch = rt.client.peek(asins) if endpoint == "peek" else rt.client.commit(asins, history=False)
            except KeepaError as exc:
                try:
                    self._call_failed(endpoint, grant_id, payload, asins, exc)
                except BadKey:
                    self.claims.finish(grant_id, begun.token)
                    raise
                self.claims.finish(grant_id, begun.token)
                return None
            answer = ProductAnswer.from_batch(batch)
            self.claims.answered(grant_id, begun.token, answer.to_json())
            return answer, begun.token
        except BaseException:
            self.claims.ended(begun.token)
            raise

    def _call_failed(self, endpoint: str, grant_id: str, payload: dict, asins: list[str], exc: KeepaError) -> None:
        """Settle a failed /product call, then give each of its ASINs its next step, every path bounded:
        a rejected request (400) never succeeds, so its ASINs are rejected with Keepa's reason; an
        answer that was paid for but unreadable as a whole counts as a malformed answer for each ASIN
        (:meth:`_product_failures`); a bad key stops the actor; anything else is asked for again, up
        to ``MAX_CALL_ATTEMPTS`` calls, then its ASINs are set aside."""
        outcome = self._failed(grant_id, endpoint, exc)
        if isinstance(exc, BadKey):
            raise exc
        self._next_step(endpoint, grant_id, payload, asins, exc, outcome)

    def _next_step(self, endpoint: str, grant_id: str, payload: dict, asins: list[str], exc: KeepaError,
                   outcome: str) -> None:
        """After a failed (or released) call: reject, ask again or set aside, as the driver says."""
        rt = self.rt
        now, attempt = rt.clock_ms(), payload.get("attempt", 0)
        step = driver.after_failure("400" if isinstance(exc, RequestRejected) else outcome,
                                    payload.get("failures", 0), message=str(exc))
        if isinstance(exc, MalformedResponse):
            self._product_failures(endpoint, grant_id, dict.fromkeys(asins, str(exc)), now)
        elif step.action == driver.REJECT:
            rt.store.record_verdicts([(a, False, f"Keepa rejected the {endpoint}: {exc}") for a in asins], now)
        elif step.action == driver.RETRY:
            self._retry(grant_id, attempt, endpoint, payload, exc, units=len(asins))
            return
        else:
            for asin in asins:
                rt.store.set_aside(asin, endpoint, step.reason, now)
        if endpoint == "peek":
            self._peek_finished(payload.get("ticket"))

    def _peek_finished(self, ticket) -> None:
        """Close a finished peek's ticket and give its window slot back, once: a ticket closed
        already (by another copy of the grant) gives nothing back twice."""
        if self.tickets.close(ticket):
            self.rt.redis.decr(OUTSTANDING_KEY)

    def _product_failures(self, stage: str, grant_id: str, failed: dict[str, str], now: int) -> None:
        """Count a malformed answer for each ASIN of ``failed`` (asin -> the decoder's reason): ask
        again for it alone while it has failed fewer than ``MAX_PRODUCT_FAILURES`` times, else set it
        aside (no more calls until an operator replays it). The single call's request id (and a
        peek's ticket) is named after the grant that found the fault, so a second copy of that grant
        (a retry after its settle failed) asks under the same id, and the governor grants it once."""
        rt = self.rt
        tag = "m" + hashlib.sha1(grant_id.encode()).hexdigest()[:8]
        for asin, reason in failed.items():
            count = rt.store.record_product_failure(asin, stage, reason, now)
            if driver.after_malformed_product(count) == driver.SET_ASIDE:
                rt.store.set_aside(asin, stage, reason, now)
                continue
            log.warning("%s %s: malformed answer %d (%s); asking for it alone", stage, asin, count, reason)
            if stage == "peek":  # its own window slot and ticket, opened before the batch's is closed
                rt.redis.incr(OUTSTANDING_KEY)
                ticket = f"{asin}x1.{tag}"
                self.tickets.open(ticket, [asin], now)
                self.ask(f"peek:{ticket}:0", stage, {"asins": [asin], "ticket": ticket})
            else:
                self.ask(f"commit:{asin}:{tag}", stage, {"asins": [asin]})

    def _under_claim(self, endpoint: str, grant_id: str, payload: dict, store) -> bool:
        """Get the grant's paid-for answer (:meth:`_paid_answer`), run ``store(asins, answer, failed,
        now)`` with it, give the malformed products their next step, settle, and mark the claim done;
        False when there was nothing to store."""
        asins = self._asins(payload, endpoint)
        paid = self._paid_answer(endpoint, grant_id, payload, asins)
        if paid is None:
            return False
        answer, token = paid
        try:
            now = self.rt.clock_ms()
            failed = _failed_products(asins, answer)
            store(asins, answer, failed, now)
            self._product_failures(endpoint, grant_id, failed, now)
            self.settle(grant_id, endpoint, _answer_outcome(answer), answer.envelope)
        except BaseException:
            self.claims.ended(token)
            raise
        self.claims.finish(grant_id, token)
        return True


def _failed_products(asins: list[str], answer: ProductAnswer) -> dict[str, str]:
    """The asked ASINs whose product was malformed, with the decoder's reason. A malformed product
    whose own ASIN was unreadable is blamed on the asked ASINs the answer has no product for."""
    asked = set(asins)
    failed = {asin: reason for asin, reason in answer.failed if asin in asked}
    unnamed = [reason for asin, reason in answer.failed if asin is None]
    if unnamed:
        answered = {p.asin for p in answer.products}
        failed.update({a: unnamed[0] for a in asins if a not in answered and a not in failed})
    return failed


def _answer_outcome(answer: ProductAnswer) -> str:
    return "malformed" if answer.failed and not answer.products else "ok"
