"""Issue 4's second figure: one worker process ingesting end to end, SQLite and PostgreSQL.

Run with ``python -m bench ingest`` (``make bench`` runs it with the rest). One ``keepa-deals worker``
process (default threads) with the governor and scheduler processes, the embedded Keepa server at a
high refill and a big feed: deals committed a second over a steady window, counted in the database.
Every server and process started here is stopped on the way out.

The feed brings 3,000 new deals a Keepa minute (a real second here), more than one worker can take,
all at the start of the minute ("lumped"): within a minute the feed stands still, as a real feed
does next to a scan of a few pages. Spread evenly instead, the feed moves 20 pages a second under
the scan's page cursor, and what a scan reads depends on how its page rate beats against that (the
same code: 81-106 committed/s there, 114-130 lumped, three runs each). One line of the table shows
that feed, so the difference stays visible.

The screen before the peek (``KEEPA_SCREEN_QUERY``, ``KEEPA_SCREEN_DEALS``) is measured on and off
side by side: at 10 % viable the runs alternate on, off, on, off on each database, and every line
says the load average the machine had (it is shared). With the screen on, the 3,000-deal feed
supplies ~290 viable deals a second, which one worker keeps up with (the figure is then the feed's);
the all-viable line shows what the worker takes when the feed is not the limit. A 9,000-deal feed
was tried and left out: the embedded server, building the filtered feed (~38 us a deal under one
lock, 0.34 s of CPU each Keepa minute), then limited the scan, not the worker.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.proc import cpu_s

ROOT = Path(__file__).resolve().parent.parent


MINUTE_S = 1.0                 # one Keepa minute lasts a real second: the scheduler ticks every second
STEADY_AFTER_S, STEADY_WINDOW_S, FIRST_DEAL_TIMEOUT_S = 4.0, 12.0, 45.0
PEEKED = ("rejected", "viable", "committed")   # light-record states an ASIN reaches only through a peek


class _Stack:
    """redis-server (AOF, fsync every second, as ``make run``), the embedded Keepa server at a high
    refill with a big feed, and the governor, one worker and the scheduler as OS processes."""

    def __init__(self, workdir: str, database_url: str, catalogue_shares: dict, lumped: bool = True,
                 screen: bool = True, new_per_minute: int = 3_000):
        from keepa_api.catalogue import Catalogue
        from keepa_api.server import FakeKeepa
        from tests.services import RedisServer, free_port

        self.workdir = workdir
        self.redis = RedisServer(workdir)
        self.procs: dict[str, subprocess.Popen] = {}
        self.keepa = None
        self.redis.start()
        epoch_ms = int(time.time() * 1000)
        catalogue = Catalogue(1, start_minute=epoch_ms // 60_000 - 21_564_000, backlog=10_000,
                              new_per_minute=new_per_minute, lumped=lumped, **catalogue_shares)
        self.keepa = FakeKeepa(refill_per_minute=100_000, start_tokens=6_000_000, minute_seconds=MINUTE_S,
                               epoch_ms=epoch_ms, catalogue=catalogue)
        self.env = {**os.environ, "REDIS_URL": self.redis.url, "DATABASE_URL": database_url,
                    "KEEPA_API_URL": self.keepa.start(), "KEEPA_MINUTE_SECONDS": str(MINUTE_S),
                    "METRICS_PORT": str(free_port()), "LOG_LEVEL": "WARNING", "KEEPA_API_KEY": "bench-key-0000",
                    "KEEPA_SCREEN_QUERY": "on" if screen else "off", "KEEPA_SCREEN_DEALS": "on" if screen else "off"}

    def start_all(self) -> None:
        for role in ("governor", "worker", "scheduler"):
            with open(os.path.join(self.workdir, f"{role}.log"), "ab") as log:
                self.procs[role] = subprocess.Popen([sys.executable, "-m", "keepa_deals.cli", role], cwd=ROOT,
                                                    env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                    start_new_session=True)

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.keepa is not None:
            self.keepa.stop()
        self.redis.stop()


def _ingest(database_url: str, workdir: str, catalogue_shares: dict, lumped: bool = True, screen: bool = True,
            new_per_minute: int = 3_000) -> dict:
    import redis

    from actors.ledger import Ledger
    from storage.store import open_store

    stack = _Stack(workdir, database_url, catalogue_shares, lumped, screen, new_per_minute)
    try:
        store = open_store(database_url)
        stack.start_all()
        started = time.monotonic()
        while store.deals_ingested() == 0:
            if time.monotonic() - started > FIRST_DEAL_TIMEOUT_S:
                raise RuntimeError(f"no deal committed within {FIRST_DEAL_TIMEOUT_S:.0f} s; see {workdir}/*.log")
            time.sleep(0.1)
        first_s = time.monotonic() - started
        time.sleep(STEADY_AFTER_S)
        ledger = Ledger(redis.Redis.from_url(stack.redis.url))

        pids = {**{role: proc.pid for role, proc in stack.procs.items()}, "redis": stack.redis.process.pid,
                "embedded Keepa (this process)": os.getpid()}

        def look():
            return (store.deals_ingested(), store.deals_by_state(), ledger.read_snapshot(), time.monotonic(),
                    {k: cpu_s(pid) for k, pid in pids.items()}, stack.keepa.books()["spent_total"])
        count0, states0, snap0, t0, cpu0, spent0 = look()
        load = os.getloadavg()[0]
        time.sleep(STEADY_WINDOW_S)
        count1, states1, snap1, t1, cpu1, spent1 = look()
        store.close()
        span = t1 - t0
        calls = {c: snap1["grants_total"][c] - snap0["grants_total"][c] for c in snap1["grants_total"]}
        peeked = {s: sum(states[k] for k in PEEKED) for s, states in (("0", states0), ("1", states1))}
        viable_now = states1["viable"] + states1["committed"]
        return {"deals_per_s": (count1 - count0) / span, "first_deal_s": first_s, "load": load,
                "tokens_per_deal": (spent1 - spent0) / max(count1 - count0, 1),
                "screened_per_s": (states1["screened"] - states0["screened"]) / span,
                "light_per_s": (sum(states1.values()) - sum(states0.values())) / span, "ingested": count1,
                "grants_per_s": {c: n / span for c, n in calls.items()},
                "asins_per_peek": (peeked["1"] - peeked["0"]) / calls["peek"] if calls["peek"] else 0.0,
                "asins_per_commit": (count1 - count0) / calls["commit"] if calls["commit"] else 0.0,
                "viable_share": viable_now / peeked["1"] if peeked["1"] else 0.0,
                "waiting": [states0["new"] + states0["peeking"] + states0["viable"],
                            states1["new"] + states1["peeking"] + states1["viable"]],
                "pending": snap1["pending"], "in_flight": snap1["in_flight"],
                "cpu": {k: (cpu1[k] - cpu0[k]) / span for k in pids}}
    finally:
        stack.close()


TEN_PERCENT = {}                                                      # the catalogue's defaults
ALL_VIABLE = {"screen_pass_fraction": 1.0, "viable_fraction": 1.0}   # every feed deal peeked and committed
SCREEN_ROUNDS = 2                                                     # on, off, on, off at 10 % viable
EVEN_FEED = "10 % viable, screen on, even feed"   # SQLite only: the feed moving under the scan (see above)


def _runs() -> list[tuple[str, dict, bool, bool]]:
    """(label, catalogue shares, lumped feed, screen on) in the order they run on each database."""
    runs = []
    for _ in range(SCREEN_ROUNDS):
        runs += [("10 % viable, screen on", TEN_PERCENT, True, True),
                 ("10 % viable, screen off", TEN_PERCENT, True, False)]
    return runs + [("all viable, screen on", ALL_VIABLE, True, True)]


def ingest_sqlite_and_postgres() -> list[tuple[str, str, dict]]:
    """[(database, label, figures)], SQLite first, then a PostgreSQL server started here."""
    from tests.services import PostgresServer, ServiceUnavailable

    results = []
    for label, shares, lumped, screen in _runs():
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as workdir:
            results.append(("SQLite", label, _ingest(f"sqlite:///{workdir}/deals.db", workdir, shares, lumped, screen)))
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as workdir:
        results.append(("SQLite", EVEN_FEED, _ingest(f"sqlite:///{workdir}/deals.db", workdir, TEN_PERCENT,
                                                     lumped=False)))
    try:
        pg = PostgresServer()
    except ServiceUnavailable as exc:
        return [*results, ("PostgreSQL", "any", {"error": str(exc)})]
    try:
        pg.start()
        for n, (label, shares, lumped, screen) in enumerate(_runs()):
            with tempfile.TemporaryDirectory(prefix="bench-ingest-pg-") as workdir:
                results.append(("PostgreSQL", label,
                                _ingest(pg.create_database(f"bench{n}"), workdir, shares, lumped, screen)))
    finally:
        pg.cleanup()
    return results


def main() -> None:
    ingest = ingest_sqlite_and_postgres()
    for db, label, r in ingest:
        if "error" in r:
            print(f"one worker, {db}, {label}: not measured ({r['error']})")
            continue
        grants = ", ".join(f"{c} {v:.1f}/s" for c, v in r["grants_per_s"].items())
        print(f"one worker, {db:10} {label:24}: {r['deals_per_s']:6.1f} deals committed/s over "
              f"{STEADY_WINDOW_S:.0f} s (load average {r['load']:.1f}); {r['tokens_per_deal']:.1f} tokens a deal; "
              f"{r['light_per_s']:.0f} feed deals stored/s, {r['screened_per_s']:.0f} of them screened out; "
              f"grants {grants}; {r['asins_per_peek']:.1f} ASINs a peek, {r['asins_per_commit']:.1f} a commit; "
              f"{100 * r['viable_share']:.1f} % of peeked ASINs viable; ASINs not yet peeked or committed "
              f"{r['waiting'][0]} -> {r['waiting'][1]}; first deal after {r['first_deal_s']:.1f} s")
        print("    CPU (cores): " + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu"].items())
              + f"; worker CPU per feed deal stored {r['cpu']['worker'] / max(r['light_per_s'], 1e-9) * 1e6:,.0f} us"
              + f", per deal committed {r['cpu']['worker'] / max(r['deals_per_s'], 1e-9) * 1e6:,.0f} us")
    print("\n| figure | target | measured |\n|---|---|---|")
    by_line: dict[tuple[str, str], list] = {}
    for db, label, r in ingest:
        by_line.setdefault((db, label), []).append(r)
    for (db, label), runs in by_line.items():
        shown = "n/a" if any("error" in r for r in runs) else ", ".join(
            f"{r['deals_per_s']:.0f} (load {r['load']:.1f})" for r in runs)
        print(f"| one worker, deals committed/s, {db}, catalogue {label} | >= 200 | {shown} |")
    for db in ("SQLite", "PostgreSQL"):
        on, off = (by_line.get((db, f"10 % viable, screen {s}"), []) for s in ("on", "off"))
        if on and off and not any("error" in r for r in on + off):
            ratio = (sum(r["deals_per_s"] for r in on) / len(on)) / (sum(r["deals_per_s"] for r in off) / len(off))
            print(f"| {db}: screen on / off, mean deals committed/s | - | {ratio:.2f} |")


if __name__ == "__main__":
    main()
