"""What each pipeline actor does with its grant: call Keepa, store each unit at once, settle.

One :class:`Steps` per process holds the runtime and the Redis helpers the actors share, and
combines the two halves of the pipeline: the feed scan (:mod:`actors.scan`) and the backfill
(:mod:`actors.backfill`: peek and commit of candidates), both talking to the governor through
:mod:`actors.asks`.

Order matters for crash safety: claim the grant, call, keep the answer in the claim, store (each
ASIN its own transaction), then settle with the governor, then ask for follow-ups. A crash anywhere
loses nothing already stored, and a grant delivered again never buys the same answer twice: it
stores the kept answer, or does nothing, or (its first call's outcome unknown) is released and
asked for again (:mod:`actors.grant_claims`). A malformed product is asked for again alone, at
most twice, then set aside (:mod:`actors.product_calls`).
"""

from __future__ import annotations

from actors.backfill import Backfill
from actors.grant_claims import GrantClaims
from actors.peek_tickets import PeekTickets
from actors.scan import FeedScan, deal_selection
from actors.scan_frontier import ScanFrontier


class Steps(FeedScan, Backfill):
    """The actors' imperative shell. ``rt`` is the runtime: broker, redis, store, client, clock."""

    def __init__(self, rt):
        self.rt = rt
        self.frontier = ScanFrontier(rt.redis, ttl_ms=30 * rt.minute_ms)
        self.selection = deal_selection(rt.rule, rt.screen_query)
        self.claims = GrantClaims(rt.redis, rt.clock_ms)
        self.tickets = PeekTickets(rt.redis)

    def rejected(self, request_id: str, cls: str, payload: dict, reason: str) -> None:
        """The governor can never grant this request (``keepa_rejected``, on the class's queue)."""
        if cls == "upsert":
            self.scan_rejected(payload)
        else:
            self.batch_rejected(request_id, cls, payload, reason)
