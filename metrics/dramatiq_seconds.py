"""Dramatiq's own message metrics, in seconds, for every worker process.

Dramatiq's bundled Prometheus middleware measures durations in milliseconds and serves its own HTTP
endpoint on 0.0.0.0:9191; this one records in seconds and serves nothing: each worker process writes
its values to ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client multiprocess mode) and the ``metrics``
process merges that directory into /metrics. The names carry a ``keepa_`` prefix so they cannot
collide with the bundled middleware's files should someone enable both.

Multiprocess mode is chosen when prometheus_client is first imported, so the launcher must set
``PROMETHEUS_MULTIPROC_DIR`` -- and wipe it with :func:`prepare_multiproc_dir` -- before any process
starts. Without the variable (or with an explicit ``registry``) the metrics live in that registry.

    broker.add_middleware(DramatiqSeconds())
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware
from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, float("inf"))
LABELS = ("queue_name", "actor_name")


def prepare_multiproc_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and delete every value file in it: call once before workers start."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return directory


class DramatiqSeconds(Middleware):
    """Counts messages, errors, retries and dead letters; gauges messages in progress; times messages.

    ``clock`` returns seconds (monotonic); tests inject one to get exact durations.
    """

    def __init__(self, registry=None, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._started: dict[str, float] = {}
        self._started_lock = threading.Lock()
        kwargs = {} if registry is None else {"registry": registry}
        self.messages = Counter("keepa_dramatiq_messages", "Dramatiq messages processed (done, failed or "
                                "skipped), in messages.", LABELS, **kwargs)
        self.errors = Counter("keepa_dramatiq_message_errors", "Dramatiq messages whose actor raised, in "
                              "messages.", LABELS, **kwargs)
        self.retries = Counter("keepa_dramatiq_message_retries", "Dramatiq messages re-enqueued for a retry, "
                               "in messages.", LABELS, **kwargs)
        self.rejects = Counter("keepa_dramatiq_message_rejects", "Dramatiq messages dead-lettered (nacked), "
                               "in messages.", LABELS, **kwargs)
        self.in_progress = Gauge("keepa_dramatiq_messages_in_progress", "Dramatiq messages being processed "
                                 "now, summed over live worker processes, in messages.", LABELS,
                                 multiprocess_mode="livesum", **kwargs)
        self.duration = Histogram("keepa_dramatiq_message_duration_seconds", "Time a Dramatiq actor spent "
                                  "on one message, in seconds.", LABELS, buckets=DURATION_BUCKETS_S, **kwargs)

    @staticmethod
    def _labels(broker, message) -> tuple[str, str]:
        """The queue its actor was declared on: a delayed (retried) message travels under its delay
        queue's name, and counts as its actor's queue all the same."""
        try:
            queue_name = broker.get_actor(message.actor_name).queue_name
        except ActorNotFound:  # an actor this process does not declare (the governor's messages)
            queue_name = message.queue_name
        return queue_name, message.actor_name

    def _declare(self, queue_name: str, actor_name: str) -> None:
        """Create an actor's series at 0, so they exist before its first message."""
        labels = (queue_name, actor_name)
        for metric in (self.messages, self.errors, self.retries, self.rejects, self.in_progress, self.duration):
            metric.labels(*labels)

    def after_declare_actor(self, broker, actor):
        self._declare(actor.queue_name, actor.actor_name)

    def after_process_boot(self, broker):
        for name in broker.get_declared_actors():
            actor = broker.get_actor(name)
            self._declare(actor.queue_name, actor.actor_name)

    def before_process_message(self, broker, message):
        with self._started_lock:
            self._started[message.message_id] = self._clock()
        self.in_progress.labels(*self._labels(broker, message)).inc()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        labels = self._labels(broker, message)
        with self._started_lock:
            started = self._started.pop(message.message_id, None)
        if started is not None:
            self.duration.labels(*labels).observe(max(0.0, self._clock() - started))
            self.in_progress.labels(*labels).dec()
        self.messages.labels(*labels).inc()
        if exception is not None:
            self.errors.labels(*labels).inc()

    def after_skip_message(self, broker, message):
        self.after_process_message(broker, message)

    def after_enqueue(self, broker, message, delay):
        # The Retries middleware re-enqueues with a delay; the worker later moves the message from
        # the delay queue with none. Counting only the first keeps one retry from counting twice.
        if delay is not None and message.options.get("retries"):
            self.retries.labels(*self._labels(broker, message)).inc()

    def after_nack(self, broker, message):
        self.rejects.labels(*self._labels(broker, message)).inc()

    def after_worker_shutdown(self, broker, worker):
        path = os.environ.get(MULTIPROC_ENV)
        if path:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), path)
            log.debug("marked process %d dead in %s", os.getpid(), path)
