"""The pipeline steps alone: CPU per feed deal with no Dramatiq, no governor and one thread.

Run with ``python -m bench steps``. The actors' own code (:class:`actors.steps.Steps`) reads a
64-page scan of the embedded Keepa server (in its own process, so its CPU is not counted here) in
16-page grants, then peeks and commits every candidate it found, against a real redis-server and a
SQLite file (and a PostgreSQL server when one can be started). The messages the steps send are
collected, not sent. What this process spends per feed deal is the floor under the ingest bench's
worker figure: everything above it there is Dramatiq, Redis round trips and threads.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCAN_PAGES, PAGES_A_GRANT, ASINS_A_CALL = 64, 16, 100
SERVE = ("from keepa_api.catalogue import Catalogue\nfrom keepa_api.server import FakeKeepa\nimport sys, time\n"
         "k = FakeKeepa(refill_per_minute=10**6, start_tokens=10**9, minute_seconds=3600.0,\n"
         "              catalogue=Catalogue(1, backlog=12_000, new_per_minute=0))\n"
         "print(k.start(), flush=True)\nsys.stdin.read()\n")


class _Collected:
    """The broker as far as the steps use it: messages are kept, the requests among them read back."""

    def __init__(self):
        self.sent = []

    def enqueue(self, message, delay=None):
        self.sent.append(message)

    def take_requests(self) -> list[dict]:
        out = [m.args[1] for m in self.sent if m.actor_name == "keepa_governor" and m.args[0] == "request"]
        self.sent.clear()
        return out


class _Runtime:
    """What :class:`actors.steps.Steps` reads from the worker's runtime, on a plentiful plan."""

    minute_ms = 60_000

    def __init__(self, redis_url: str, database_url: str, keepa_url: str, screen: bool):
        import redis

        from keepa_api.client import KeepaClient
        from pipeline.verdict import ViabilityRule
        from storage.store import open_store

        self.screen_query = self.screen_deals = screen
        self.broker, self.redis = _Collected(), redis.Redis.from_url(redis_url)
        self.store, self.rule = open_store(database_url), ViabilityRule()
        self.client, self.pool = KeepaClient("bench-key-0000", base_url=keepa_url), ThreadPoolExecutor(PAGES_A_GRANT)

    def clock_ms(self) -> int:
        return int(time.time() * 1000)

    def peek_batch(self) -> int:
        return ASINS_A_CALL

    def commit_batch(self) -> int:
        return ASINS_A_CALL

    def scan_pages(self) -> int:
        return PAGES_A_GRANT

    def read_pages(self, selection, pages):
        from actors.scan import read_pages

        return read_pages(self.client, selection, pages, self.pool)

    def close(self) -> None:
        self.pool.shutdown()
        self.client.close()
        self.store.close()


def _run(database_url: str, redis_url: str, keepa_url: str, screen: bool) -> dict:
    from actors.peek_tickets import OUTSTANDING_KEY
    from actors.steps import Steps

    rt = _Runtime(redis_url, database_url, keepa_url, screen)
    steps = Steps(rt)
    cpu = {}
    try:
        started = time.process_time()
        for page in range(0, SCAN_PAGES, PAGES_A_GRANT):
            steps.upsert(f"upsert:1.{page}:0", {"scan": 1, "page": page, "pages": PAGES_A_GRANT})
        cpu["scan"] = time.process_time() - started
        cpu["peek"] = cpu["commit"] = 0.0
        asked = {"peek": 0, "commit": 0}
        requests = rt.broker.take_requests()
        while requests:
            for request in requests:
                cls = request["cls"]
                if cls not in asked:
                    continue
                started = time.process_time()
                getattr(steps, cls)(request["id"], request["payload"])
                cpu[cls] += time.process_time() - started
                asked[cls] += len(request["payload"]["asins"])
            rt.redis.set(OUTSTANDING_KEY, 0)
            started = time.process_time()
            steps.top_up()
            cpu["peek"] += time.process_time() - started
            requests = rt.broker.take_requests()
        feed = rt.store.deals_stored()
        return {"feed": feed, "peeked": asked["peek"], "committed": rt.store.deals_ingested(), "cpu": cpu}
    finally:
        rt.close()


def measure() -> dict:
    """{"database, screen on|off": figures}: SQLite, then PostgreSQL if a server can be started here;
    on each, the screen on, then off, each on a fresh Redis and database."""
    from tests.services import PostgresServer, RedisServer, ServiceUnavailable

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as workdir:
        keepa = subprocess.Popen([sys.executable, "-c", SERVE], cwd=ROOT, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        redis_server = RedisServer(workdir)
        try:
            keepa_url = keepa.stdout.readline().strip()
            for screen in (True, False):
                redis_server.start()  # a fresh Redis each run: the running-scan key of the last one is gone
                label = f"SQLite, screen {'on' if screen else 'off'}"
                results[label] = _run(f"sqlite:///{workdir}/{screen}.db", redis_server.url, keepa_url, screen)
                redis_server.stop()
            try:
                pg = PostgresServer()
            except ServiceUnavailable as exc:
                results["PostgreSQL"] = {"error": str(exc)}
            else:
                try:
                    pg.start()
                    for screen in (True, False):
                        redis_server.start()
                        label = f"PostgreSQL, screen {'on' if screen else 'off'}"
                        results[label] = _run(pg.create_database(f"steps{int(screen)}"), redis_server.url,
                                              keepa_url, screen)
                        redis_server.stop()
                finally:
                    pg.cleanup()
        finally:
            redis_server.stop()
            with contextlib.suppress(OSError):
                keepa.stdin.close()
            keepa.wait(10)
    return results


def main() -> None:
    for db, r in measure().items():
        if "error" in r:
            print(f"steps alone, {db}: not measured ({r['error']})")
            continue
        cpu = r["cpu"]
        total = sum(cpu.values())
        print(f"steps alone, {db:25}: {r['feed']:,} feed deals, {r['peeked']:,} peeked, {r['committed']:,} "
              f"committed; CPU per feed deal {total / r['feed'] * 1e6:,.0f} us (scan "
              f"{cpu['scan'] / r['feed'] * 1e6:,.0f}, peek {cpu['peek'] / r['feed'] * 1e6:,.0f}, commit "
              f"{cpu['commit'] / r['feed'] * 1e6:,.0f}); CPU per deal committed "
              f"{total / max(r['committed'], 1) * 1e6:,.0f} us; one core would store {r['feed'] / total:,.0f} feed "
              f"deals a second")


if __name__ == "__main__":
    main()
