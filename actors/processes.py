"""The Procfile's processes: governor, worker, scheduler (and the supervisor that restarts them).

Each runs a programmatic Dramatiq ``Worker`` (not the dramatiq CLI: honcho signals the whole process
group, and the CLI's children die on the second SIGTERM without draining). On SIGTERM or SIGINT a
worker stops consuming, lets in-flight messages finish (unstarted ones go back to the queue), and
exits 0.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time

import dramatiq

from actors.app import setup
from actors.ledger import Ledger
from actors.messages import to_governor
from actors.peek_tickets import TICKET_TIMEOUT_MINUTES
from governor.model import CLASSES
from keepa_base.redis_keys import SCHEDULER_TICK_KEY
from keepa_deals.lifeline import stop_on_signals
from keepa_deals.settings import Settings

log = logging.getLogger(__name__)

WORKER_QUEUES = CLASSES   # the worker consumes one queue per request class
DRAIN_TIMEOUT_MS = 8_000
CLAIM_TIMEOUT_MINUTES = 10   # a claim no peek answers for this many Keepa minutes goes back in line


def _stop_event() -> threading.Event:
    """Set on SIGTERM or SIGINT, however many arrive at once (see :func:`stop_on_signals`)."""
    return stop_on_signals((signal.SIGTERM, signal.SIGINT))


def wait_for_redis(url: str, stop: threading.Event) -> bool:
    """Redis absent at start: say so, retry with back-off (1 s to 30 s) until it answers or we stop."""
    import redis

    client, delay_s = redis.Redis.from_url(url, socket_connect_timeout=2), 1.0
    while not stop.is_set():
        try:
            client.ping()
            return True
        except redis.RedisError as exc:
            log.error("Redis at %s does not answer (%s); retrying in %.0f s", url.split("@")[-1], exc, delay_s)
            stop.wait(delay_s)
            delay_s = min(30.0, delay_s * 2)
    return False


WORKER_THREADS = 8   # the worker's default; each thread makes one Keepa call at a time


def run_worker(settings: Settings, threads: int | None = None) -> int:
    """The upsert, peek and commit actors on a Dramatiq worker (``threads``: WORKER_THREADS)."""
    threads = WORKER_THREADS if threads is None else threads
    stop = _stop_event()
    if not wait_for_redis(settings.redis_url, stop):
        return 0
    rt = setup(settings)
    worker = dramatiq.Worker(rt.broker, queues=set(WORKER_QUEUES), worker_threads=threads, worker_timeout=100)
    worker.start()
    log.info("consuming %s with %d thread(s)", ",".join(sorted(WORKER_QUEUES)), threads)
    stop.wait()
    log.info("stopping: draining the messages in progress")
    worker.stop(timeout=DRAIN_TIMEOUT_MS)
    rt.broker.close()
    return 0


def run_governor(settings: Settings) -> int:
    """The governor: its own batch loop (see :mod:`actors.governor_loop`), not a Dramatiq worker."""
    from actors.broker import close_broker, make_broker
    from actors.doorbell import Doorbell
    from actors.governor_loop import GovernorLoop

    stop = _stop_event()
    if not wait_for_redis(settings.redis_url, stop):
        return 0
    rt = setup(settings, with_host=True)
    log.info("governor %s running its batch loop", rt.host.ledger.holder[:8])

    def new_broker():   # after a reply from Redis may have been lost: a new broker id
        return make_broker(settings.redis_url)

    doorbell = Doorbell(settings.redis_url)
    try:
        GovernorLoop(rt, stop, doorbell, new_broker=new_broker).run()
    finally:
        doorbell.close()
        rt.host.close()
        close_broker(rt.host.broker)   # the loop's (it may have replaced the first)
        if rt.broker is not rt.host.broker:
            close_broker(rt.broker)
    return 0


def scheduler_tick(rt, now_ms: int) -> bool:
    """One tick; at most once per Keepa minute however many schedulers or restarts there are.

    The peek tickets (:mod:`actors.peek_tickets`) are swept first: those untouched for
    ``TICKET_TIMEOUT_MINUTES`` are dropped, claims older than ``CLAIM_TIMEOUT_MINUTES`` that no open
    ticket names go back in line (a worker died between claiming and asking), and the peek window
    is reset to the open tickets (a count a crash may have left wrong)."""
    slot = now_ms // rt.minute_ms
    if not rt.redis.set(f"keepa-deals:scheduler:tick:{slot}", now_ms, nx=True, px=10 * rt.minute_ms):
        return False
    snapshot = Ledger(rt.redis).read_snapshot()
    started = rt.steps.start_scan(now_ms, snapshot)
    tickets = rt.steps.tickets.sweep(now_ms, TICKET_TIMEOUT_MINUTES * rt.minute_ms)
    requeued = rt.store.requeue_stale_claims(CLAIM_TIMEOUT_MINUTES * rt.minute_ms, now_ms, in_use=tickets.asins)
    if requeued:
        log.warning("requeued %d candidates claimed by workers that never asked for their peek", requeued)
    if not started and snapshot and now_ms - snapshot.get("updated_ms", 0) < 2 * rt.minute_ms:
        rt.steps.ask_again_if_lost(snapshot)
    rt.steps.top_up()
    # the governor keeps its own wakes (its state's wake_at); this nudge makes it decide at least
    # once a Keepa minute whatever happened to its timer
    rt.broker.enqueue(to_governor("wake", {}))
    rt.redis.set(SCHEDULER_TICK_KEY, now_ms)   # a tick that ran to the end: the dead-scheduler alert reads it
    return True


def run_scheduler(settings: Settings) -> int:
    stop = _stop_event()
    if not wait_for_redis(settings.redis_url, stop):
        return 0
    rt = setup(settings)
    while not stop.is_set():
        now = rt.clock_ms()
        try:
            scheduler_tick(rt, now)
        except Exception:  # a database or Redis outage: log, keep ticking, retry next minute
            log.exception("scheduler tick failed; retrying at the next tick")
        stop.wait((rt.minute_ms - now % rt.minute_ms) / 1000)
    rt.broker.close()
    return 0


def supervise(argv: list[str]) -> int:
    """Run ``keepa-deals ARGV`` and restart it whenever it dies without being asked to stop."""
    child: subprocess.Popen | None = None

    def forward(signum):
        if child and child.poll() is None:
            child.send_signal(signum)

    stopping = stop_on_signals((signal.SIGTERM, signal.SIGINT), then=forward)
    backoff_s = 1.0
    while not stopping.is_set():
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "keepa_deals.cli", *argv])
        code = child.wait()
        if stopping.is_set():
            return 0
        backoff_s = 1.0 if time.monotonic() - started > 60 else min(30.0, backoff_s * 2)
        log.error("%s exited with %s; restarting in %.0f s", " ".join(argv), code, backoff_s)
        stopping.wait(backoff_s)
    return 0
