"""A real keepa-deals stack for integration tests: real redis-server (with an append-only file, so a
restart keeps the queues), the embedded Keepa server over HTTP, SQLite, and the governor, worker and
scheduler as separate OS processes running real Dramatiq workers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import redis

from actors.ledger import GRANT_LOG_KEY, Ledger
from actors.peek_tickets import TICKETS_KEY, TOUCHED_KEY
from keepa_api.catalogue import Catalogue
from keepa_api.server import FakeKeepa
from storage.store import open_store
from tests.services import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent


class DurableRedis(RedisServer):
    """redis-server with appendfsync always: what a restart must not lose, it does not lose."""

    def start(self) -> None:
        if self.running:
            return
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", self.workdir, "--logfile", self.logfile],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from tests.services import wait_until
        wait_until(self._answers_ping, f"redis-server on port {self.port}")


def wait_for(predicate, timeout_s: float, what: str, every_s: float = 0.2):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


def read_line(stream, timeout_s: float, what: str) -> str:
    """The next line of a child's output; fail naming ``what`` after ``timeout_s`` instead of blocking
    on a child that prints nothing. The reading thread ends when the child's pipe closes."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not got:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
    return got[0]


class Stack:
    def __init__(self, workdir: Path, *, minute_s: float = 0.5, refill_per_minute: int = 20, **keepa):
        self.workdir = workdir
        self.redis_server = DurableRedis(str(workdir))
        self.redis_server.start()
        if "catalogue" not in keepa:
            # every feed deal passes the screen and 10 % are viable on the peek: the workload these
            # tests were written for (candidates waiting, peeks and commits in flight); the screen
            # itself is tested through the actors' path in tests/test_steps.py
            epoch_ms = keepa.setdefault("epoch_ms", int(time.time() * 1000))
            keepa["catalogue"] = Catalogue(keepa.get("seed", 1), start_minute=epoch_ms // 60_000 - 21_564_000,
                                           screen_pass_fraction=1.0, viable_fraction=0.1)
        self.keepa = FakeKeepa(refill_per_minute=refill_per_minute, minute_seconds=minute_s, **keepa)
        self.keepa_url = self.keepa.start()
        self.db_url = f"sqlite:///{workdir}/deals.db"
        self.env = {**os.environ, "REDIS_URL": self.redis_server.url, "DATABASE_URL": self.db_url,
                    "KEEPA_API_URL": self.keepa_url, "KEEPA_MINUTE_SECONDS": str(minute_s),
                    "METRICS_PORT": str(free_port()), "LOG_LEVEL": "INFO", "KEEPA_API_KEY": "canary-key-7f3a9c"}
        self.procs: dict[str, subprocess.Popen] = {}
        self.redis = redis.Redis.from_url(self.redis_server.url)
        self._store = None

    # -- processes ------------------------------------------------------------------------------
    def start(self, role: str, name: str | None = None, *extra: str) -> subprocess.Popen:
        name = name or role
        with open(self.workdir / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen([sys.executable, "-m", "keepa_deals.cli", role, *extra], cwd=ROOT,
                                    env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_all(self) -> None:
        for role in ("governor", "worker", "scheduler"):
            self.start(role)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def terminate(self, name: str, timeout_s: float = 20) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout_s)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for name in list(self.procs):
            try:
                self.terminate(name, timeout_s=15)
            except subprocess.TimeoutExpired:
                self.kill(name)
        self.keepa.stop()
        self.redis_server.stop()

    # -- what tests look at ---------------------------------------------------------------------
    @property
    def store(self):
        if self._store is None:
            self._store = open_store(self.db_url)
        return self._store

    def snapshot(self) -> dict | None:
        return Ledger(self.redis).read_snapshot()

    def pending_ids(self) -> set[str]:
        return {k.decode() for k in self.redis.hkeys("keepa-deals:governor:pending")}

    def in_flight_ids(self) -> set[str]:
        return {k.decode() for k in self.redis.hkeys("keepa-deals:governor:inflight")}

    def pending_and_in_flight_ids(self) -> tuple[set[str], set[str]]:
        """Both at one instant (MULTI/EXEC): read one after the other, a grant in between shows
        the same request in both."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hkeys("keepa-deals:governor:pending")
        pipe.hkeys("keepa-deals:governor:inflight")
        pending, in_flight = pipe.execute()
        return {k.decode() for k in pending}, {k.decode() for k in in_flight}

    def ingested(self) -> int:
        return self.store.deals_ingested()

    def grant_log(self) -> list[str]:
        """Every grant id the governor issued, in order (its log in Redis, written with each grant)."""
        return [g.decode() for g in self.redis.lrange(GRANT_LOG_KEY, 0, -1)]

    def assert_granted_once(self) -> Counter:
        """No request id granted twice, and every grant in flight is in the log (both read at one
        instant, MULTI/EXEC: read one after the other, a grant in between is in flight only)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.lrange(GRANT_LOG_KEY, 0, -1)
        pipe.hkeys("keepa-deals:governor:inflight")
        logged, in_flight = pipe.execute()
        log = Counter(g.decode() for g in logged)
        twice = {gid: n for gid, n in log.items() if n > 1}
        assert not twice, f"granted more than once: {twice}"
        assert {g.decode() for g in in_flight} <= set(log)
        return log

    def rows(self, sql: str) -> list[tuple]:
        """A query on the stack's SQLite file, as any client would run it (after the schema exists)."""
        assert self.store is not None
        with closing(sqlite3.connect(self.db_url.removeprefix("sqlite:///"), timeout=30)) as db:
            return db.execute(sql).fetchall()

    def states(self) -> dict[str, str]:
        return dict(self.rows("SELECT asin, state FROM light_deal"))

    def committed(self) -> set[str]:
        return {asin for (asin,) in self.rows("SELECT asin FROM deal")}

    def wait_finished(self, asins, timeout_s: float, what: str) -> None:
        """Wait until none of ``asins`` is claimed or viable; on timeout say where each one's peek or
        commit is (governor pending or in flight, which queue) and its grant's claim."""
        try:
            wait_for(lambda: not self.unfinished(asins), timeout_s, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.whereabouts(self.unfinished(asins))}") from None

    def whereabouts(self, asins) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {asin: [] for asin in asins}
        for where, key in (("pending", "keepa-deals:governor:pending"), ("in flight", "keepa-deals:governor:inflight")):
            for rid, raw in self.redis.hgetall(key).items():
                for asin in asins:
                    if asin.encode() in raw:
                        claim = self.redis.get(f"keepa-deals:grant:{rid.decode()}")
                        found[asin].append(f"{where} {rid.decode()} claim={claim}")
        for ticket, raw in self.redis.hgetall(TICKETS_KEY).items():
            for asin in asins:
                if asin.encode() in raw:
                    touched = self.redis.zscore(TOUCHED_KEY, ticket)
                    found[asin].append(f"peek ticket {ticket.decode()} touched at {touched}")
        return found

    def unfinished(self, asins) -> set[str]:
        """Those of ``asins`` still claimed for a peek or waiting for their commit."""
        return {a for a, s in self.states().items() if a in asins and s in ("peeking", "viable")}
