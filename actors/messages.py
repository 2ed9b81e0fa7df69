"""The messages actors exchange, validated on arrival.

A malformed message (wrong type, missing field, unknown class) is a :class:`MalformedMessage`: it is
logged with what was wrong and dropped without retries (it would never succeed), and nothing already
stored is touched.
"""

from __future__ import annotations

from dramatiq import Message

from governor.model import CLASSES
from keepa_api.tokens import Envelope
from keepa_base.calls import ENDPOINTS as ENDPOINTS  # re-exported: the governor checks settles against them
from keepa_base.calls import OUTCOMES as OUTCOMES
from keepa_base.errors import KeepaDealsError

GOVERNOR_QUEUE = "governor"
# Dramatiq messages name an actor; no actor consumes the governor's queue (the governor process's
# own loop does, actors.governor_loop), but every message for it carries this name
GOVERNOR_ACTOR = "keepa_governor"
# the actors the governor's answers run: a grant of class c runs GRANT_ACTOR[c] on queue c; a
# rejection runs REJECTED_ACTOR on the rejected request's queue (Dramatiq routes by actor name)
GRANT_ACTOR = {cls: f"keepa_{cls}" for cls in CLASSES}
REJECTED_ACTOR = "keepa_rejected"


class MalformedMessage(KeepaDealsError):
    """A message that can never be processed; the text says which field is wrong."""


def to_governor(kind: str, body: dict) -> Message:
    """A message for the governor: ``kind`` is ``request``, ``settle`` or ``wake``."""
    return Message(queue_name=GOVERNOR_QUEUE, actor_name=GOVERNOR_ACTOR, args=(kind, body), kwargs={}, options={})


def field(body, name: str, kind, where: str):
    if not isinstance(body, dict):
        raise MalformedMessage(f"{where}: body must be an object, got {type(body).__name__}")
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise MalformedMessage(f"{where}: field {name!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def envelope_from(body, where: str) -> Envelope | None:
    raw = body.get("envelope") if isinstance(body, dict) else None
    if raw is None:
        return None
    try:
        return Envelope.from_json(raw)
    except (ValueError, OverflowError) as exc:
        raise MalformedMessage(f"{where}: bad envelope: {exc}") from None


def envelope_to(envelope: Envelope | None) -> dict | None:
    return None if envelope is None else envelope.to_json()
