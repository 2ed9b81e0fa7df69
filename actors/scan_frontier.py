"""Which feed scan runs, and which of its grants may ask for the next pages: two Redis keys.

A scan is a chain of upsert grants, each asking for the next pages after storing its own. A grant
can run more than once (Dramatiq's redelivery, a retry after a database error, the governor's
resend of a grant that has not settled), and a failed page is asked for again while the failed
grant may still run again. Without a rule, each such run could start a chain of its own, and an
old run could end a scan still in progress or start one nobody scheduled. So:

- ``keepa-deals:scan`` holds the running scan's id, with a time to live renewed by each grant; a
  scan starts (at the scheduler's tick, or at the end of the one before) only while it is absent
  (``SET NX``).
- ``keepa-deals:scan:asked`` holds ``"<scan>:<page>"``, the first page of the last grant asked for
  (``"<scan>:end"`` once the scan is over). Only the run of that grant may ask for the next one,
  so a chain never forks: every other run stores what it read and stops.

Both keys are read and written by Lua scripts (``actors/lua/scan_*.lua``), each one atomic in Redis.
"""

from __future__ import annotations

from actors.lua_scripts import register

SCAN_KEY, ASKED_KEY = "keepa-deals:scan", "keepa-deals:scan:asked"


class ScanFrontier:
    """The two keys for one Redis; ``ttl_ms`` is how long a scan may go without a grant running."""

    def __init__(self, redis, ttl_ms: int):
        self.ttl_ms = ttl_ms
        self._start, self._claim = register(redis, "scan_start"), register(redis, "scan_claim")
        self._advance, self._end = register(redis, "scan_advance"), register(redis, "scan_end")

    @staticmethod
    def _run(script, *args) -> bool:
        return bool(script(keys=[SCAN_KEY, ASKED_KEY], args=list(args)))

    def start(self, scan: int, page: int) -> bool:
        """Begin ``scan`` at ``page`` unless a scan runs; True if it began."""
        return self._run(self._start, scan, page, self.ttl_ms)

    def claim(self, scan: int) -> bool:
        """A grant of ``scan`` is about to read: False if that scan is over or another one runs."""
        return self._run(self._claim, scan, self.ttl_ms)

    def advance(self, scan: int, from_page: int, to_page: int) -> bool:
        """May the run of the grant asked for at ``from_page`` ask for ``to_page``? If so, it is
        recorded as asked: no other run can ask after it."""
        return self._run(self._advance, scan, from_page, to_page)

    def end(self, scan: int) -> None:
        """``scan`` is over: the scheduler may start the next one."""
        self._run(self._end, scan)
