"""A worker runs the grants it has fetched in the governor's order: upsert, then commit, then peek."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import dramatiq
from dramatiq.brokers.stub import StubBroker

from actors import app
from governor.model import CLASSES


def _until(condition, what: str) -> None:
    """Wait (bounded) for the worker's threads to reach a state; the loop waits for threads, not time."""
    for _ in range(5_000):
        if condition():
            return
        time.sleep(0.001)
    raise AssertionError(f"timed out waiting until {what}")


class _Recording:
    def __init__(self):
        self.ran = []

    def __getattr__(self, cls):
        return lambda grant_id, payload: self.ran.append(cls)


def test_grants_waiting_in_a_worker_run_upsert_first_then_commit_then_peek(monkeypatch):
    broker = StubBroker()
    broker.emit_after("process_boot")
    steps = _Recording()
    monkeypatch.setattr(app, "RUNTIME", SimpleNamespace(steps=steps, host=None))
    app._declare_actors(broker)
    entered, go = threading.Event(), threading.Event()

    @dramatiq.actor(broker=broker, queue_name="gate", priority=-1)
    def gate():  # holds the worker's only thread while the grants arrive
        entered.set()
        go.wait(10)

    worker = dramatiq.Worker(broker, worker_timeout=20, worker_threads=1)
    worker.start()
    try:
        gate.send()
        assert entered.wait(10)
        for n, cls in enumerate(reversed(CLASSES)):  # peek arrives first, upsert last
            broker.enqueue(dramatiq.Message(queue_name=cls, actor_name=f"keepa_{cls}",
                                            args=(f"{cls}:x:0", {}), kwargs={}, options={}))
            _until(lambda n=n: worker.work_queue.qsize() == n + 1, f"the worker has fetched the {cls} grant")
        go.set()
        for queue in ("gate", *CLASSES):
            broker.join(queue, timeout=10_000)
        worker.join()
    finally:
        go.set()
        worker.stop()
        broker.close()
    assert steps.ran == list(CLASSES)
