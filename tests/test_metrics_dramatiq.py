"""Dramatiq's message metrics in seconds: a real Worker on a StubBroker, in process and across processes.

Time is a fake clock that advances a quarter second per reading, so durations are exact; the tests
wait with ``broker.join`` / ``worker.join``, never with sleeps.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from prometheus_client import CollectorRegistry, generate_latest

from metrics.dramatiq_seconds import DramatiqSeconds, prepare_multiproc_dir
from metrics.exporter import build_registry
from tests.test_metrics import promtool_check_metrics
from tests.test_metrics_support import FakeRedis, samples, value


class QuarterSecondClock:
    def __init__(self):
        self.now, self.lock = 100.0, threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.now += 0.25
            return self.now


@pytest.fixture
def broker():
    broker = StubBroker()
    broker.emit_after("process_boot")
    yield broker
    broker.close()


def run_worker(broker, queue: str) -> None:
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        broker.join(queue, fail_fast=False)
        worker.join()
    finally:
        worker.stop()


def test_messages_errors_retries_and_durations_are_counted_in_seconds(broker):
    registry = CollectorRegistry()
    broker.add_middleware(DramatiqSeconds(registry=registry, clock=QuarterSecondClock()))
    attempts = []

    @dramatiq.actor(broker=broker, queue_name="work", max_retries=0)
    def fine():
        pass

    @dramatiq.actor(broker=broker, queue_name="work", max_retries=0)
    def broken():
        raise ValueError("always")

    @dramatiq.actor(broker=broker, queue_name="work", max_retries=1, min_backoff=10, max_backoff=10)
    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("first time only")

    @dramatiq.actor(broker=broker, queue_name="work", max_retries=0)
    def idle():
        pass

    for _ in range(3):
        fine.send()
    broken.send()
    flaky.send()
    run_worker(broker, "work")

    parsed = samples(generate_latest(registry).decode())

    def get(name, actor):
        return value(parsed, name, queue_name="work", actor_name=actor)

    assert get("keepa_dramatiq_messages_total", "fine") == 3
    assert get("keepa_dramatiq_message_duration_seconds_count", "fine") == 3
    assert get("keepa_dramatiq_message_duration_seconds_sum", "fine") == 0.75
    assert value(parsed, "keepa_dramatiq_message_duration_seconds_bucket", queue_name="work", actor_name="fine",
                 le="0.25") == 3
    assert get("keepa_dramatiq_message_errors_total", "broken") == 1
    assert get("keepa_dramatiq_message_rejects_total", "broken") == 1
    assert get("keepa_dramatiq_messages_total", "flaky") == 2
    assert get("keepa_dramatiq_message_errors_total", "flaky") == 1
    assert get("keepa_dramatiq_message_retries_total", "flaky") == 1, "a retry counts once, not per queue hop"
    for actor in ("fine", "broken", "flaky"):
        assert get("keepa_dramatiq_messages_in_progress", actor) == 0
    assert get("keepa_dramatiq_messages_total", "idle") == 0, "a declared actor's series exist before it runs"
    assert get("keepa_dramatiq_message_errors_total", "fine") == 0


WORKER_PROCESS = textwrap.dedent("""
    import sys
    import dramatiq
    from dramatiq.brokers.stub import StubBroker
    from metrics.dramatiq_seconds import DramatiqSeconds

    broker = StubBroker()
    broker.emit_after("process_boot")
    broker.add_middleware(DramatiqSeconds())

    @dramatiq.actor(broker=broker, queue_name="work", max_retries=0)
    def step():
        pass

    for _ in range(int(sys.argv[1])):
        step.send()
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    broker.join("work")
    worker.join()
    worker.stop()
""")


def test_worker_processes_write_a_multiprocess_directory_the_exporter_merges(tmp_path, monkeypatch):
    directory = tmp_path / "prom"
    directory.mkdir()
    (directory / "counter_99999.db").write_bytes(b"stale from a previous run")
    prepare_multiproc_dir(directory)
    assert not list(directory.glob("*.db")), "the launcher's wipe removes stale files"

    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER_PROCESS, str(n)], env=env) for n in (4, 6)]
    assert [w.wait(timeout=30) for w in workers] == [0, 0]

    text = generate_latest(build_registry(FakeRedis(None), None, multiproc_dir=str(directory))).decode()
    parsed = samples(text)
    labels = {"queue_name": "work", "actor_name": "step"}
    assert value(parsed, "keepa_dramatiq_messages_total", **labels) == 10
    assert value(parsed, "keepa_dramatiq_message_duration_seconds_count", **labels) == 10
    assert value(parsed, "keepa_dramatiq_message_errors_total", **labels) == 0
    assert ("keepa_dramatiq_messages_in_progress", tuple(sorted(labels.items()))) not in parsed or \
        value(parsed, "keepa_dramatiq_messages_in_progress", **labels) == 0, "dead processes drop out of livesum"
    assert value(parsed, "keepa_governor_up") == 0, "the keepa collector is served alongside"
    promtool_check_metrics(text)
