"""The line ``keepa-deals up`` prints every ``--progress-seconds`` (30 s by default) while it runs.

One line, read from the same document as ``keepa-deals status`` (:func:`keepa_deals.status.collect`):
deals stored and ingested with the change since the previous line, the token balance, what is
pending per class, and why the first waiting request waits (the governor's own explanation)::

    12:41:07 progress | deals 326 stored (+41), 36 ingested (+5) | tokens 1007 (+20/min) | pending
    upsert 0, commit 1, peek 3 | commit waits (runs in 2 s): balance 0 (less 0 ...) at or below floor 0
"""

from __future__ import annotations

import logging
import time

from governor.model import CLASSES

log = logging.getLogger(__name__)

PROGRESS_S = 30.0
REASON_CHARS = 160


def _change(now: int, before: int | None) -> str:
    return "" if before is None else f" ({now - before:+d})"


def _clock(now_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(now_ms / 1000))


def first_waiting(doc: dict) -> tuple[str, dict] | None:
    """The class and row of the first request that waits, in the governor's priority order."""
    for cls in CLASSES:
        row = doc["pending"][cls]
        if row["pending"] and row["reason"]:
            return cls, row
    return None


def progress_line(doc: dict, previous: dict | None = None) -> str:
    """One line from a status document; ``previous`` is the document of the line before (or None)."""
    now = doc["now_ms"]
    before = previous or {}
    parts = [f"{_clock(now)} progress",
             f"deals {doc['deals_stored']} stored{_change(doc['deals_stored'], before.get('deals_stored'))}, "
             f"{doc['deals_ingested']} ingested{_change(doc['deals_ingested'], before.get('deals_ingested'))}"]
    if not doc["governor_seen"]:
        parts.append("governor: no state in Redis yet")
        return " | ".join(parts)
    tokens = f"tokens {doc['tokens_balance']} (+{doc['refill_rate']}/min"
    parts.append(tokens + (", recharging)" if doc["recharge_active"] else ")"))
    parts.append("pending " + ", ".join(f"{cls} {doc['pending'][cls]['pending']}" for cls in CLASSES))
    first = first_waiting(doc)
    if first is None:
        parts.append("nothing waits")
    else:
        cls, row = first
        eta = row["runs_at_ms"]
        when = "no projected time" if eta is None else (
            f"runs in {max(0, eta - now) / 1000:.0f} s" if eta >= now else "due now")
        reason = row["reason"] if len(row["reason"]) <= REASON_CHARS else row["reason"][:REASON_CHARS - 3] + "..."
        parts.append(f"{cls} waits ({when}): {reason}")
    return " | ".join(parts)


class ProgressReporter:
    """Reads the status document on demand and formats the next line, remembering the last one.

    ``collect(now_ms)`` returns a status document (production: :func:`keepa_deals.status.collect`
    with one store and one Redis client kept open); a failure becomes a line saying so, never an
    exception: the launcher must keep running when Redis or the database is briefly away."""

    def __init__(self, collect, clock_ms=lambda: int(time.time() * 1000)):
        self._collect, self._clock_ms = collect, clock_ms
        self._previous: dict | None = None

    def line(self) -> str:
        now = self._clock_ms()
        try:
            doc = self._collect(now)
        except Exception as exc:  # Redis restarting, the database locked: say so and try next time
            log.debug("progress unavailable", exc_info=True)
            return f"{_clock(now)} progress | unavailable: {type(exc).__name__}: {exc}"
        line = progress_line(doc, self._previous)
        self._previous = doc
        return line


def status_collector(settings):
    """``collect(now_ms)`` for :class:`ProgressReporter`: one Redis client and one store, the store
    opened on first use (the workers create the schema as they start) and kept; ``close()`` ends both."""
    import redis

    from keepa_deals.status import collect

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
    held: dict = {}

    def read(now_ms: int) -> dict:
        if "store" not in held:
            from storage.store import open_store

            held["store"] = open_store(settings.database_url)
        return collect(settings, now_ms, store=held["store"], client=client)

    def close() -> None:
        client.close()
        if "store" in held:
            held["store"].close()

    read.close = close
    return read
