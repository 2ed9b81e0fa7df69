"""The lock a process's threads take before they write to SQLite, with the feed scan first in line.

SQLite takes one writer at a time. A connection that finds the database locked sleeps in SQLite's
busy handler (1, 2, 5, 10 ... ms) however soon the lock is free again, so the threads of one process
queue here first and are woken as soon as the holder leaves (see :func:`storage.db.write_transaction`).

The feed scan is the pipeline's first step, and the governor grants it first; its writes (a page of
light records, then the scan cursor) are first here too. Without that, each page queued behind the
peek and commit threads writing at that moment, twice a page: a sampling profile of a worker under
the ingest bench found its scan thread waiting for this lock 47 % of its time. One scan runs at a
time and it lets go between pages, so the other writers are never shut out for long.
"""

from __future__ import annotations

import contextlib
import threading


class WriteLock:
    """Reentrant; among the threads waiting, those that asked with ``first`` get it before the others."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._waiting = {True: 0, False: 0}

    @property
    def waiting(self) -> int:
        """Threads waiting for the lock now."""
        with self._cond:
            return self._waiting[True] + self._waiting[False]

    @contextlib.contextmanager
    def hold(self, first: bool = False):
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
            else:
                self._waiting[first] += 1
                try:
                    while self._owner is not None or (not first and self._waiting[True]):
                        self._cond.wait()
                finally:
                    self._waiting[first] -= 1
                self._owner, self._depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._owner = None
                    self._cond.notify_all()
