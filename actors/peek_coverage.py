"""Which claimed candidates a peek still on its way will answer.

A candidate is claimed (state ``peeking``) before its peek is asked for. Its peek then sits in one of
these places until it runs: a request on the governor's queue or delay queue (a retry), the
governor's pending set, the governor's in-flight set (granted), or the grant on the ``peek`` queue or
its delay queue (a Dramatiq retry); a grant being run stays in the queue's message hash until it is
acknowledged. A claim found in none of them belongs to a worker that died between the claim and the
ask (or a grant dropped after its retries): :func:`actors.processes.scheduler_tick` returns it to line.

Reads Dramatiq's Redis layout (``<namespace>:<queue>.msgs``), as :mod:`actors.dispatch` does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

from dramatiq import Message
from dramatiq.common import dq_name

from actors.ledger import PREFIX

log = logging.getLogger(__name__)


def _asins(payload) -> list[str]:
    asins = payload.get("asins") if isinstance(payload, dict) else None
    return [a for a in asins if isinstance(a, str)] if isinstance(asins, list) else []


QUEUES = ("governor", dq_name("governor"), "peek", dq_name("peek"))


def asins_awaiting_peek(broker) -> set[str]:
    """Every ASIN named by a peek request or grant that has not finished yet.

    The six places are read in one transaction (MULTI/EXEC): read one after another, a request moving
    from the governor's queue to its pending set, or a retry from a delay queue to its queue, between
    two reads would be missed, and its live claim returned to line and peeked twice."""
    client = broker.client
    pipe = client.pipeline(transaction=True)
    pipe.hvals(PREFIX + "pending")
    pipe.hvals(PREFIX + "inflight")
    for queue in QUEUES:
        pipe.hvals(_msgs_key(broker, queue))
    pending, inflight, *held = pipe.execute()
    found: set[str] = set()
    for raw in pending:
        entry = json.loads(raw)
        if entry.get("cls") == "peek":
            found.update(_asins(entry.get("payload")))
    for raw in inflight:
        entry = json.loads(raw)
        if entry.get("grant", {}).get("request", {}).get("cls") == "peek":
            found.update(_asins(entry.get("payload")))
    for raws in held:
        for message, first, second in _decoded(raws):
            if message.actor_name == "keepa_peek":
                found.update(_asins(second))
            elif first == "request" and isinstance(second, dict) and second.get("cls") == "peek":
                found.update(_asins(second.get("payload")))
    return found


def _msgs_key(broker, queue: str) -> str:
    return f"{broker.namespace}:{queue}.msgs"


def messages_on(broker, queue: str) -> Iterator[tuple[Message, object, object]]:
    """Each message held for ``queue`` (queued, delayed, or fetched and not yet acknowledged) with
    its first two arguments; malformed ones are skipped (the consumers drop them)."""
    return _decoded(broker.client.hvals(_msgs_key(broker, queue)))


def _decoded(raws) -> Iterator[tuple[Message, object, object]]:
    for raw in raws:
        try:
            message = Message.decode(raw)
            first, second = message.args[:2]
        except Exception:
            continue
        yield message, first, second
