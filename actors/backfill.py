"""The backfill: claim candidates, peek them with fresh stats, commit the viable ones.

A candidate (a feed deal that passed the screen, state ``new``) is claimed (``peeking``) and a peek
asked for, at most ``pipeline.driver.PEEK_WINDOW`` peeks outstanding; each peek opens a ticket before its request is
sent (:mod:`actors.peek_tickets`), which the scheduler reads to tell a live claim from a dead
worker's. A peek's verdicts are stored and its viable ASINs asked to be committed in plan-sized
calls; the commit stores the deal. The calls themselves, paid for once and decoded product by
product, are :mod:`actors.product_calls`.
"""

from __future__ import annotations

import logging

from actors.peek_tickets import OUTSTANDING_KEY, new_ticket
from actors.product_answer import ProductAnswer
from actors.product_calls import ProductCalls
from pipeline import driver

log = logging.getLogger(__name__)


class Backfill(ProductCalls):
    """Mixed into :class:`actors.steps.Steps`, whose ``rt``, ``tickets``, ``ask`` and ``claims`` it uses."""

    def ask_commits(self, chunks: list[list[str]]) -> None:
        """Ask to commit viable ASINs, one call per chunk (:func:`pipeline.driver.peek_outcome`); the
        ids follow from the ASINs, so a redelivered peek asks for the same commits again (the
        governor drops repeats)."""
        for chunk in chunks:
            rid = f"commit:{chunk[0]}x{len(chunk)}:0" if len(chunk) > 1 else f"commit:{chunk[0]}:0"
            self.ask(rid, "commit", {"asins": chunk}, units=len(chunk))

    def top_up(self) -> int:
        """Claim candidates and ask to peek them, keeping at most ``PEEK_WINDOW`` peeks outstanding.

        Each peek carries a full batch; a part-filled one goes only when no other peek is outstanding
        (:func:`pipeline.batching.peek_claim_minimum`). A window slot is taken before claiming, so
        concurrent threads never both send a part-filled batch."""
        rt = self.rt
        batch = rt.peek_batch()
        asked = 0
        while True:
            claim = driver.peek_claim(rt.redis.incr(OUTSTANDING_KEY) - 1, batch)
            asins = []
            if claim is not None:
                asins = rt.store.take_candidates(claim.at_most, rt.clock_ms(), at_least=claim.at_least)
            if not asins:
                rt.redis.decr(OUTSTANDING_KEY)
                return asked
            ticket = new_ticket(asins)
            self.tickets.open(ticket, asins, rt.clock_ms())   # before the ask: the scheduler leaves them be
            self.ask(f"peek:{ticket}:0", "peek", {"asins": asins, "ticket": ticket}, units=len(asins))
            asked += 1

    def batch_rejected(self, request_id: str, cls: str, payload: dict, reason: str) -> None:
        """The governor can never grant this peek or commit: split a batch, or set the ASIN aside.
        A peek's rejection acts only while its ticket is open (a repeat, or one whose claims went back
        in line, does nothing); each single peek of a split opens its ticket before the batch's closes."""
        rt = self.rt
        asins = payload.get("asins") or []
        ticket = payload.get("ticket")
        if cls == "peek" and not self.tickets.touch(ticket, rt.clock_ms()):
            log.warning("%s rejected (%s), but its peek ticket %s is gone: nothing to do", request_id, reason, ticket)
            return
        singles = driver.after_rejection(asins)
        if singles is not None:
            if cls == "peek":  # the batch's window slot becomes one per single peek
                rt.redis.incrby(OUTSTANDING_KEY, len(asins) - 1)
            for (asin,) in singles:
                if cls == "peek":
                    single = f"{ticket}/{asin}"
                    self.tickets.open(single, [asin], rt.clock_ms())
                    self.ask(f"peek:{single}:0", cls, {"asins": [asin], "ticket": single})
                else:
                    self.ask(f"{cls}:{asin}x1:0", cls, {"asins": [asin]})
            if cls == "peek":
                self.tickets.close(ticket)
            return
        for asin in asins:
            rt.store.record_verdict(asin, False, reason, rt.clock_ms())
        if cls == "peek":
            self._peek_finished(ticket)

    def peek(self, grant_id: str, payload: dict) -> None:
        if self._under_claim("peek", grant_id, payload, self._store_verdicts):
            self._peek_finished(payload.get("ticket"))   # after the verdicts: its claims are answered
            self.top_up()

    def _store_verdicts(self, asins: list[str], answer: ProductAnswer, failed: dict[str, str], now: int) -> None:
        stats = {p.asin: p.stats for p in answer.products}
        outcome = driver.peek_outcome([a for a in asins if a not in failed], stats,
                                      commit_batch=self.rt.commit_batch(), rule=self.rt.rule)
        self.rt.store.record_verdicts(outcome.verdicts, now)
        self.ask_commits(outcome.commits)

    def commit(self, grant_id: str, payload: dict) -> None:
        self._under_claim("commit", grant_id, payload, self._store_deals)

    def _store_deals(self, asins: list[str], answer: ProductAnswer, failed: dict[str, str], now: int) -> None:
        store = self.rt.store
        answered = {product.asin for product in answer.products}
        for asin in asins:  # nothing Keepa left out stays "viable" for ever: set it aside, saying why
            if asin not in answered and asin not in failed:
                store.record_verdict(asin, False, "Keepa's commit answer had no product for it", now)
        products = [(p.asin, p.title, p.stats, p.offers) for p in answer.products]
        outcome = driver.commit_outcome(products, store.deal_times(answered), now)
        for asin, reason in outcome.refused:
            store.record_verdict(asin, False, reason, now)
        for record in outcome.records:
            store.store_deal(record)
