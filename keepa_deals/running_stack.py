"""One ``keepa-deals up`` per Redis: a second one is refused at start, naming REDIS_URL.

A running ``up`` holds the key ``keepa-deals:up`` (its pid, host and start time) with a short TTL
and renews it every ``RENEW_S``; a stack started some other way (the Procfile under another runner)
shows as a governor holding its lease. Either refuses a new ``up`` on the same Redis. A key left by
an ``up`` of this host whose pid is gone (SIGKILLed within the TTL) is stale and taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time

import redis

from actors.ledger import KEYS as GOVERNOR_KEYS
from actors.lua_scripts import register
from keepa_base.errors import ConfigError
from keepa_base.redis_keys import PREFIX

MARKER_KEY = PREFIX + "up"
MARKER_TTL_MS = 6_000
RENEW_S = 2.0

class StackAlreadyRunning(ConfigError):
    """Another keepa-deals stack uses this REDIS_URL; the message says which and what to do."""


def redacted(url: str) -> str:
    """A URL (REDIS_URL, DATABASE_URL) without its user and password."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.split('@')[-1]}" if sep else url.split("@")[-1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunningStack:
    """The marker of this ``up``: :meth:`claim` at start, :meth:`renew` while running, :meth:`release`."""

    def __init__(self, client: redis.Redis, redis_url: str, pid: int | None = None, now_ms: int | None = None):
        self.client, self.redis_url = client, redis_url
        self.pid = pid if pid is not None else os.getpid()
        started = now_ms if now_ms is not None else int(time.time() * 1000)
        self.value = json.dumps({"pid": self.pid, "host": socket.gethostname(), "started_ms": started})
        self._take_over = register(client, "replace_if_held")
        self._renew = register(client, "renew_if_held")
        self._release = register(client, "release_if_held")

    def claim(self) -> None:
        """Take the marker, or raise :class:`StackAlreadyRunning` naming REDIS_URL and the holder."""
        if not self._take():
            holder = _parse(self.client.get(MARKER_KEY))
            age_s = (time.time() * 1000 - holder.get("started_ms", 0)) / 1000
            raise StackAlreadyRunning(
                f"a keepa-deals stack is already running on REDIS_URL={redacted(self.redis_url)}: `keepa-deals "
                f"up` (pid {holder.get('pid')} on {holder.get('host')}, started {age_s:.0f} s ago) uses it. Stop "
                "it first (Ctrl-C in its terminal), or set REDIS_URL to another Redis (a new port starts a new "
                "local redis-server)")
        leader, lease_ms = self.client.get(GOVERNOR_KEYS[0]), self.client.pttl(GOVERNOR_KEYS[0])
        if leader:
            self.release()
            raise StackAlreadyRunning(
                f"a keepa-deals stack is already running on REDIS_URL={redacted(self.redis_url)}: governor "
                f"{leader.decode()[:8]} holds the lease (for another {max(lease_ms, 0) / 1000:.0f} s). Stop that "
                "stack first, or set REDIS_URL to another Redis (a new port starts a new local redis-server)")

    def _take(self) -> bool:
        for _ in range(2):  # a marker that expires between the two reads gets a second try
            if self.client.set(MARKER_KEY, self.value, nx=True, px=MARKER_TTL_MS):
                return True
            raw = self.client.get(MARKER_KEY)
            if raw is None:
                continue
            holder = _parse(raw)
            stale = holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid") or 0))
            return stale and bool(self._take_over(keys=[MARKER_KEY], args=[raw, self.value, MARKER_TTL_MS]))
        return False

    def renew(self) -> bool:
        return bool(self._renew(keys=[MARKER_KEY], args=[self.value, MARKER_TTL_MS]))

    def keep(self) -> bool:
        """Renew the marker; put it back if it is gone (a Redis restarted without it). False: another
        process holds it now."""
        return self.renew() or bool(self.client.set(MARKER_KEY, self.value, nx=True, px=MARKER_TTL_MS))

    def release(self) -> bool:
        return bool(self._release(keys=[MARKER_KEY], args=[self.value]))


def _parse(raw) -> dict:
    try:
        doc = json.loads(raw) if raw else {}
        return doc if isinstance(doc, dict) else {}
    except ValueError:
        return {}
