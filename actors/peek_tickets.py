"""Peek tickets: which claimed candidates a peek still on its way will answer, in our own Redis keys.

A candidate is claimed (state ``peeking``) before its peek is asked for. Just before the request is
sent, the asking worker opens a *ticket* naming the claimed ASINs; the ticket's id travels in the
request's payload (``ticket``), through its retries and the grant, and the ticket is closed when the
peek is finished: its verdicts stored, the request rejected for good, its ASINs set aside, or handed
on to single peeks that each opened a ticket of their own first. Two keys hold them:

    keepa-deals:peek:tickets   hash: ticket id -> JSON list of its ASINs
    keepa-deals:peek:touched   sorted set: ticket id -> when (ms) it was last opened or granted, or
                               when its delayed re-ask comes due

The scheduler (:func:`actors.processes.scheduler_tick`) sweeps them: a ticket untouched for
``TICKET_TIMEOUT_MINUTES`` (a message lost, a worker dead between storing and closing, the governor
down that long) is dropped with a warning, and every claim no open ticket names (a worker that died
between claiming and asking) goes back in line. A grant, or a delayed re-ask, first *touches* its
ticket and makes no Keepa call if it is gone: the sweep and the touch are each one Lua script, so a
ticket is either still open when its grant calls or already dropped and its grant does nothing. A
peek is therefore never paid for twice for one claim, however long its request waited.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass

from actors.ledger import KEYS as GOVERNOR_KEYS
from actors.lua_scripts import register

log = logging.getLogger(__name__)

OUTSTANDING_KEY = "keepa-deals:peek:outstanding"   # the peek window's count (actors.backfill)
TICKETS_KEY = "keepa-deals:peek:tickets"
GOVERNOR_PENDING_KEY, GOVERNOR_INFLIGHT_KEY = GOVERNOR_KEYS[2], GOVERNOR_KEYS[3]   # what the governor holds
TOUCHED_KEY = "keepa-deals:peek:touched"
# long enough for any request the governor holds while it lives; a late grant after it is harmless
TICKET_TIMEOUT_MINUTES = 60


@dataclass(frozen=True)
class Sweep:
    """What :meth:`PeekTickets.sweep` found: the ASINs open tickets name, how many tickets are open,
    and the ids of those it dropped."""

    asins: frozenset[str]
    open_tickets: int
    dropped: tuple[str, ...]


def new_ticket(asins: list[str]) -> str:
    """A ticket id for a fresh claim: its first ASIN and size (for the logs) and a random tail, so a
    claim returned and taken again never shares an id with the request still waiting for the old one."""
    return f"{asins[0]}x{len(asins)}.{uuid.uuid4().hex[:8]}"


class PeekTickets:
    def __init__(self, client):
        keys = [TICKETS_KEY, TOUCHED_KEY]
        scripts = {"open": register(client, "peek_ticket_open"), "touch": register(client, "peek_ticket_touch"),
                   "close": register(client, "peek_ticket_close"), "sweep": register(client, "peek_ticket_sweep")}
        self._run = lambda name, *args: scripts[name](keys=keys, args=list(args))
        sweep_keys = [*keys, GOVERNOR_PENDING_KEY, GOVERNOR_INFLIGHT_KEY, OUTSTANDING_KEY]
        self._sweep = lambda *args: scripts["sweep"](keys=sweep_keys, args=list(args))

    def open(self, ticket: str, asins: list[str], now_ms: int) -> None:
        """Open ``ticket`` for the claimed ``asins``; do it before sending the request that carries it."""
        self._run("open", ticket, json.dumps(asins, separators=(",", ":")), now_ms)

    def touch(self, ticket, now_ms: int) -> bool:
        """True if ``ticket`` is still open (and now fresh): its claims are still this peek's to answer.
        False (a ticket the scheduler dropped, or none at all) means: make no call, ask nothing."""
        return isinstance(ticket, str) and bool(self._run("touch", ticket, now_ms))

    def close(self, ticket) -> bool:
        """The peek is finished; False if the ticket was not open."""
        return isinstance(ticket, str) and bool(self._run("close", ticket))

    def sweep(self, now_ms: int, timeout_ms: int) -> Sweep:
        """Drop the tickets untouched for ``timeout_ms`` (each with a warning) and say what the open
        ones cover, all in one atomic step, which also resets the peek window's count to the open
        tickets (a count a crash may have left wrong). A ticket whose request the governor holds
        (pending or granted) counts as touched now, however long it has waited for tokens."""
        dropped, still_open = self._sweep(now_ms - timeout_ms, now_ms)
        ids = []
        for at in range(0, len(dropped), 3):
            ticket, asins, touched = (v.decode() for v in dropped[at:at + 3])
            ids.append(ticket)
            log.warning("peek ticket %s for %s dropped: untouched %s; its claims go back in line and a late "
                        "grant for it makes no call", ticket, asins,
                        "since it was opened without a time" if touched == "-1"
                        else f"for {(now_ms - float(touched)) / 1000:.0f} s")
        asins: set[str] = set()
        for raw in still_open:
            asins.update(json.loads(raw))
        return Sweep(frozenset(asins), len(still_open), tuple(ids))
