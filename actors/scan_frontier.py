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

Both keys are read and written by Lua scripts, each one atomic in Redis.
"""

from __future__ import annotations

SCAN_KEY, ASKED_KEY = "keepa-deals:scan", "keepa-deals:scan:asked"

_START = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then
  redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[2]) return 1
end
return 0
"""
# keep the running-scan key for ARGV[1] (or take it back once expired) unless another scan holds
# it, a newer scan was asked for since, or this one is over
_CLAIM = """
local running = redis.call('GET', KEYS[1])
if running and running ~= ARGV[1] then return 0 end
local asked = redis.call('GET', KEYS[2])
if asked then
  local scan, page = string.match(asked, '^(.-):(.*)$')
  if scan ~= ARGV[1] or page == 'end' then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# an absent marker (a Redis that lost its data) lets the first run that asks take the lead
_ADVANCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local asked = redis.call('GET', KEYS[2])
if asked and asked ~= ARGV[1] .. ':' .. ARGV[2] then return 0 end
redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[3])
return 1
"""
_END = """
local asked = redis.call('GET', KEYS[2])
if asked and string.match(asked, '^(.-):') == ARGV[1] then redis.call('SET', KEYS[2], ARGV[1] .. ':end') end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class ScanFrontier:
    """The two keys for one Redis; ``ttl_ms`` is how long a scan may go without a grant running."""

    def __init__(self, redis, ttl_ms: int):
        self.ttl_ms = ttl_ms
        self._scripts = {name: redis.register_script(text) for name, text in
                         (("start", _START), ("claim", _CLAIM), ("advance", _ADVANCE), ("end", _END))}

    def _run(self, name: str, *args) -> bool:
        return bool(self._scripts[name](keys=[SCAN_KEY, ASKED_KEY], args=list(args)))

    def start(self, scan: int, page: int) -> bool:
        """Begin ``scan`` at ``page`` unless a scan runs; True if it began."""
        return self._run("start", scan, page, self.ttl_ms)

    def claim(self, scan: int) -> bool:
        """A grant of ``scan`` is about to read: False if that scan is over or another one runs."""
        return self._run("claim", scan, self.ttl_ms)

    def advance(self, scan: int, from_page: int, to_page: int) -> bool:
        """May the run of the grant asked for at ``from_page`` ask for ``to_page``? If so, it is
        recorded as asked: no other run can ask after it."""
        return self._run("advance", scan, from_page, to_page)

    def end(self, scan: int) -> None:
        """``scan`` is over: the scheduler may start the next one."""
        self._run("end", scan)
