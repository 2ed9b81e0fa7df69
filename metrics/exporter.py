"""The ``metrics`` process: an HTTP exporter whose collector reads shared state on every scrape.

On each scrape :class:`KeepaCollector` reads the governor's snapshot from Redis (key
:data:`SNAPSHOT_KEY`) and the deal counts from the database through a store object, then hands both
to :func:`metrics.families.families`. Nothing is counted in this process, so the numbers are right
however many worker processes run. When ``PROMETHEUS_MULTIPROC_DIR`` is set, the per-process
Dramatiq metrics written there (:mod:`metrics.dramatiq_seconds`) are merged into the same output.

Start it with :func:`serve` (blocks) or :func:`start` (returns a running :class:`Exporter`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from governor.spend import window_start_ms
from keepa_base.redis_keys import REPEATED_KEY, SNAPSHOT_KEY
from keepa_deals.lifeline import stop_on_signals
from metrics.families import INGEST_WINDOW_MINUTES, DatabaseCounts, families
from metrics.stalls import StallReadings, read_database, read_scheduler_tick, stall_families

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class CountStore(Protocol):
    """The part of ``storage.store.Store`` the exporter reads (times in Unix ms)."""

    def deals_stored(self) -> int: ...
    def deals_ingested(self) -> int: ...
    def deals_ingested_since(self, since_ms: int) -> int: ...
    def last_ingested_ms(self) -> int | None: ...
    def candidates_waiting(self) -> int: ...
    def watermark_age_ms(self, now_ms: int) -> int | None: ...
    def feed_last_scan_ms(self) -> int | None: ...
    def oldest_claim_ms(self) -> int | None: ...
    def deals_screened_out(self) -> int: ...
    def products_set_aside(self) -> int: ...


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def read_snapshot(redis_client, key: str = SNAPSHOT_KEY) -> dict | None:
    """The governor's snapshot, or ``None`` when there is none or it is not a JSON object."""
    raw = redis_client.get(key)
    if raw is None:
        return None
    try:
        snap = json.loads(raw)
    except ValueError:
        log.warning("governor snapshot at %s is not JSON; treating it as missing", key)
        return None
    return snap if isinstance(snap, dict) else None


def read_counts(store: CountStore, now_ms: int) -> DatabaseCounts:
    window_ms = INGEST_WINDOW_MINUTES * 60_000
    return DatabaseCounts(
        deals_stored=int(store.deals_stored()),
        deals_ingested=int(store.deals_ingested()),
        deals_ingested_window=int(store.deals_ingested_since(now_ms - window_ms)),
        last_ingested_ms=store.last_ingested_ms(),
        candidates_waiting=int(store.candidates_waiting()),
        watermark_age_ms=store.watermark_age_ms(now_ms),
        deals_ingested_last_hour=int(store.deals_ingested_since(window_start_ms(now_ms))),
        deals_screened_out=int(store.deals_screened_out()),
        products_set_aside=int(store.products_set_aside()),
    )


def read_calls_repeated(redis_client) -> int:
    """The workers' count of Keepa calls made twice for one grant (:mod:`actors.grant_claims`)."""
    raw = redis_client.get(REPEATED_KEY)
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        log.warning("%s is not an integer; exporting 0", REPEATED_KEY)
        return 0


class KeepaCollector:
    """A prometheus_client collector: one read of Redis and one of the database per scrape.

    A source that fails is logged and exported as zeros with ``keepa_exporter_source_up`` 0, so a
    scrape never fails because Redis or the database is down.
    """

    def __init__(self, redis_client, store: CountStore | None, *, now_ms: Callable[[], int] = wall_clock_ms,
                 snapshot_key: str = SNAPSHOT_KEY, minute_seconds: float = 60.0):
        self._redis = redis_client
        self._store = store
        self._now_ms = now_ms
        self._key = snapshot_key
        self._minute_s = minute_seconds   # a Keepa minute in real seconds (the plan's scan interval)
        self._lock = threading.Lock()  # scrapes may overlap; stores need not be thread-safe

    def collect(self):
        with self._lock:
            now_ms = self._now_ms()
            snap, counts, repeated = None, None, 0
            stalls: dict = {}
            up = {"redis": False, "database": False}
            try:
                snap = read_snapshot(self._redis, self._key)
                stalls["scheduler_tick_ms"] = read_scheduler_tick(self._redis)
                repeated = read_calls_repeated(self._redis)
                up["redis"] = True
            except Exception as exc:  # any Redis failure must not fail the scrape
                log.warning("cannot read the governor snapshot from Redis: %s", exc)
            if self._store is not None:
                try:
                    counts = read_counts(self._store, now_ms)
                    stalls["feed_last_scan_ms"], stalls["oldest_claim_ms"] = read_database(self._store)
                    up["database"] = True
                except Exception as exc:  # any database failure must not fail the scrape
                    log.warning("cannot read deal counts from the database: %s", exc)
                finally:
                    self._release_connection()
        yield from families(snap, counts, now_ms, up, calls_repeated=repeated)
        yield from stall_families(StallReadings(**stalls), snap, now_ms, self._minute_s)

    def _release_connection(self) -> None:
        """Scrapes run on short-lived server threads: close this thread's connection, if the store
        keeps one per thread, rather than leave one behind per scrape."""
        close = getattr(self._store, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:
                log.debug("closing the store's connection failed: %s", exc)


def build_registry(redis_client, store: CountStore | None, *, now_ms: Callable[[], int] = wall_clock_ms,
                   multiproc_dir: str | None = None, minute_seconds: float = 60.0) -> CollectorRegistry:
    """A registry with the keepa collector and, if ``multiproc_dir`` is given, the Dramatiq metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KeepaCollector(redis_client, store, now_ms=now_ms, minute_seconds=minute_seconds))
    if multiproc_dir:
        os.makedirs(multiproc_dir, exist_ok=True)
        MultiProcessCollector(registry, path=multiproc_dir)
    return registry


class Exporter:
    """A running exporter; ``port`` is the bound port (useful when 0 was asked for)."""

    def __init__(self, server, thread: threading.Thread, host: str):
        self._server, self._thread, self.host = server, thread, host
        self.port = server.server_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _default_store(settings) -> CountStore:
    from storage.store import open_store  # imported late: unit tests need no database

    return open_store(settings.database_url)


def start(settings, store: CountStore | None, *, redis_client=None,
          now_ms: Callable[[], int] = wall_clock_ms) -> Exporter:
    """Bind ``METRICS_HOST:METRICS_PORT`` and serve /metrics from a background thread."""
    if redis_client is None:
        import redis

        redis_client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    registry = build_registry(redis_client, store, now_ms=now_ms, multiproc_dir=os.environ.get(MULTIPROC_ENV),
                              minute_seconds=settings.keepa_minute_seconds)
    server, thread = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    exporter = Exporter(server, thread, settings.metrics_host)
    log.info("metrics exporter serving %s", exporter.url)
    return exporter


def serve(settings, store_factory: Callable[[object], CountStore] | None = None) -> int:
    """The ``metrics`` process: serve until SIGTERM or SIGINT, then return 0.

    ``store_factory(settings)`` builds the store (default: ``storage.store.open_store(DATABASE_URL)``).
    """
    store = (store_factory or _default_store)(settings)
    if threading.current_thread() is threading.main_thread():
        stop = stop_on_signals((signal.SIGTERM, signal.SIGINT))  # safe when several arrive at once
    else:
        stop = threading.Event()
    exporter = start(settings, store)
    try:
        stop.wait()
    finally:
        exporter.stop()
    log.info("metrics exporter stopped")
    return 0
