"""Wiring: settings -> broker, Redis, storage, Keepa client, governor host; then the actors.

:func:`setup` must run before any actor is declared (``@dramatiq.actor`` binds to the broker that
exists at import time), so the actors are declared inside :func:`_declare_actors`, once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import dramatiq
import redis

from actors.asks import ASK_AGAIN_ACTOR
from actors.broker import make_broker
from actors.governor_host import STALE_GRANT_MS, GovernorHost
from actors.ledger import Ledger
from actors.messages import GRANT_ACTOR, REJECTED_ACTOR, MalformedMessage
from actors.scan import read_pages
from actors.steps import Steps
from governor.config import GovernorConfig
from keepa_base.errors import BadKey, ConfigError
from keepa_deals.settings import Settings
from pipeline import batching
from pipeline.verdict import ViabilityRule

log = logging.getLogger(__name__)

EMBEDDED_KEY = "embedded-simulator-key"
CALL_TIMEOUT_S = 10.0  # shorter than honcho's grace period, so a shutdown never waits on Keepa
_POOL_LOCK = threading.Lock()
RATE_REFRESH_S = 1.0   # how stale a worker's idea of the plan's rate may be (it sizes batches only)


@dataclass
class Runtime:
    settings: Settings
    broker: object
    redis: redis.Redis
    store: object
    client: object
    host: GovernorHost | None = None
    rule: ViabilityRule = field(default_factory=ViabilityRule)
    steps: Steps | None = None
    _rate: int = 0
    _rate_read_s: float | None = None
    _page_pool: ThreadPoolExecutor | None = None

    @property
    def screen_query(self) -> bool:
        return self.settings.screen_query

    @property
    def screen_deals(self) -> bool:
        return self.settings.screen_deals

    @property
    def minute_ms(self) -> int:
        return int(self.settings.keepa_minute_seconds * 1000)

    def clock_ms(self) -> int:
        return int(time.time() * 1000)

    def plan_rate(self) -> int:
        """Keepa's refill rate as the governor knows it: its own model in the governor process,
        elsewhere its snapshot in Redis, read at most once per ``RATE_REFRESH_S``; 0 until known."""
        gov = self.host.gov if self.host is not None else None
        if gov is not None:
            return int(gov.rate)
        now = time.monotonic()
        if self._rate_read_s is None or now - self._rate_read_s >= RATE_REFRESH_S:
            self._rate_read_s = now
            snap = Ledger(self.redis).read_snapshot()
            if snap and snap.get("refill_rate"):
                self._rate = int(snap["refill_rate"])
        return self._rate

    def peek_batch(self) -> int:
        return batching.peek_batch(self.plan_rate())

    def commit_batch(self) -> int:
        return batching.commit_batch(self.plan_rate())

    def scan_pages(self) -> int:
        return batching.scan_pages(self.plan_rate())

    def read_pages(self, selection: dict, pages: range) -> Iterator:
        if self._page_pool is None and len(pages) > 1:  # made in the process that reads, on first use
            with _POOL_LOCK:
                if self._page_pool is None:
                    self._page_pool = ThreadPoolExecutor(batching.MAX_SCAN_PAGES, thread_name_prefix="keepa-page")
        return read_pages(self.client, selection, pages, self._page_pool)

RUNTIME: Runtime | None = None


def governor_config(settings: Settings) -> GovernorConfig:
    minute = int(settings.keepa_minute_seconds * 1000)
    # a request repeated by the copy of a grant the governor sent again (after STALE_GRANT_MS of real
    # time, whatever the Keepa minute) must still find its id among those finished: on a shortened
    # minute (the demo, the tests) 60 Keepa minutes can be shorter than that
    remember_ms = max(60 * minute, 4 * STALE_GRANT_MS)
    return GovernorConfig(period_ms=minute, recharge_timeout_ms=60 * minute, remember_ms=remember_ms,
                          hold_grace_ms=max(1_000, minute // 12), recharge=settings.recharge)


def make_client(settings: Settings):
    from keepa_api.client import KeepaClient

    if settings.keepa_api_key is None and settings.keepa_api_url.startswith("https://api.keepa.com"):
        raise ConfigError("KEEPA_API_KEY is unset: set it to talk to Keepa, or point KEEPA_API_URL at the "
                          "embedded server (`make run` does this)")
    return KeepaClient(settings.keepa_api_key or EMBEDDED_KEY, base_url=settings.keepa_api_url,
                       domain=settings.keepa_domain, timeout_s=CALL_TIMEOUT_S)


def setup(settings: Settings, *, broker=None, store=None, client=None, with_host: bool = False) -> Runtime:
    """Configure everything once per process; returns the runtime the actors use."""
    global RUNTIME
    if RUNTIME is not None:
        return RUNTIME
    from storage.store import open_store

    broker = broker or make_broker(settings.redis_url)
    dramatiq.set_broker(broker)
    rt = Runtime(settings=settings, broker=broker, redis=redis.Redis.from_url(settings.redis_url),
                 store=store or open_store(settings.database_url), client=client or make_client(settings))
    if with_host:
        rt.host = GovernorHost(Ledger(rt.redis), broker, governor_config(settings), rt.client.token)
    rt.steps = Steps(rt)
    RUNTIME = rt
    _declare_actors(broker)
    return rt


def _declare_actors(broker) -> None:
    common = {"broker": broker, "throws": (MalformedMessage, BadKey)}

    @dramatiq.actor(queue_name="upsert", actor_name=GRANT_ACTOR["upsert"], max_retries=5, **common)
    def keepa_upsert(grant_id, payload):
        RUNTIME.steps.upsert(grant_id, payload)

    @dramatiq.actor(queue_name="peek", actor_name=GRANT_ACTOR["peek"], max_retries=5, **common)
    def keepa_peek(grant_id, payload):
        RUNTIME.steps.peek(grant_id, payload)

    @dramatiq.actor(queue_name="commit", actor_name=GRANT_ACTOR["commit"], max_retries=5, **common)
    def keepa_commit(grant_id, payload):
        RUNTIME.steps.commit(grant_id, payload)

    # the governor sends rejections to the rejected request's own queue; dramatiq routes by actor
    # name, so this one actor runs wherever that class's workers listen
    @dramatiq.actor(queue_name="upsert", actor_name=REJECTED_ACTOR, max_retries=3, **common)
    def keepa_rejected(request_id, cls, payload, reason):
        RUNTIME.steps.rejected(request_id, cls, payload, reason)

    # a failed call's request, asked again after a delay: the delayed message waits on its class's
    # own queue (Dramatiq's worker holds it until due), then this actor sends it to the governor
    @dramatiq.actor(queue_name="upsert", actor_name=ASK_AGAIN_ACTOR, max_retries=3, **common)
    def keepa_ask_again(body):
        RUNTIME.steps.ask_again(body)


def reset_for_tests() -> None:
    """Forget the process's runtime (a test that declared the actors on its own broker)."""
    global RUNTIME
    RUNTIME = None
