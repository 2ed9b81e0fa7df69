"""The process's SQLite write lock: one holder, reentrant, and the feed scan's writes first in line."""

from __future__ import annotations

import threading
import time

from pipeline.watermark import Watermark
from storage.db import _write_lock
from storage.store import open_store
from storage.write_lock import WriteLock


def _until(condition, what: str) -> None:
    """Wait (bounded) for another thread to reach a state; these loops wait for threads, not for time."""
    for _ in range(5_000):
        if condition():
            return
        time.sleep(0.001)
    raise AssertionError(f"timed out waiting until {what}")


def _writer(lock: WriteLock, order: list, name: str, first: bool) -> threading.Thread:
    def body():
        with lock.hold(first):
            order.append(name)
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def test_a_first_writer_goes_before_writers_that_waited_longer():
    lock, order = WriteLock(), []
    with lock.hold():
        threads = []
        for n, name in enumerate(("peek-1", "commit-1")):
            threads.append(_writer(lock, order, name, first=False))
            _until(lambda n=n: lock.waiting == n + 1, f"{name} waits")
        threads.append(_writer(lock, order, "scan", first=True))
        _until(lambda: lock.waiting == 3, "the scan waits")
    for thread in threads:
        thread.join(10)
    assert order[0] == "scan" and sorted(order[1:]) == ["commit-1", "peek-1"]
    assert lock.waiting == 0


def test_without_a_first_writer_waiting_every_writer_gets_the_lock_and_only_one_at_a_time():
    lock, inside, most = WriteLock(), [0], [0]
    guard = threading.Lock()

    def body(i):
        for _ in range(200):
            with lock.hold(first=i == 0):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=body, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a writer never got the lock"
    assert most[0] == 1


def test_the_holder_may_take_it_again_and_it_is_free_only_when_the_outer_hold_ends():
    lock, order = WriteLock(), []
    with lock.hold(), lock.hold(first=True):
        waiter = _writer(lock, order, "other", first=False)
        _until(lambda: lock.waiting == 1, "the other thread waits")
    waiter.join(10)
    assert order == ["other"]


def test_the_scan_writes_ask_first_and_the_other_writes_do_not(tmp_path, monkeypatch):
    store = open_store(f"sqlite:///{tmp_path}/deals.db")
    asked = []
    hold = WriteLock.hold

    def recording(self, first=False):
        asked.append(first)
        return hold(self, first)

    monkeypatch.setattr(WriteLock, "hold", recording)
    assert isinstance(_write_lock(store.db), WriteLock)
    store.upsert_deals([("B000000001", 1_000)], 2_000)
    store.advance_watermark(Watermark(mark_ms=None, scan_top_ms=1_000, next_page=1), 2_000, from_page=0)
    scan = asked[:]
    asked.clear()
    store.take_candidates(1, 3_000)
    store.record_verdicts([("B000000001", True, "cheap")], 4_000)
    store.close()
    assert scan and all(scan)
    assert asked and not any(asked)
