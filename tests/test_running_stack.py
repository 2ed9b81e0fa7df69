"""One `keepa-deals up` per Redis: the marker a running `up` holds, and the governor's lease, refuse a
second one with a message naming REDIS_URL (never its password). Real redis-server."""

from __future__ import annotations

import os
import subprocess

import pytest
import redis

from actors.ledger import KEYS as GOVERNOR_KEYS
from keepa_deals.running_stack import MARKER_KEY, MARKER_TTL_MS, RunningStack, StackAlreadyRunning

URL_WITH_PASSWORD = "redis://:s3cret@127.0.0.1:6399/0"


@pytest.fixture
def client(redis_server):
    conn = redis.Redis.from_url(redis_server)
    conn.delete(MARKER_KEY, GOVERNOR_KEYS[0])
    yield conn
    conn.delete(MARKER_KEY, GOVERNOR_KEYS[0])
    conn.close()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_second_up_is_refused_while_the_first_holds_the_marker_naming_redis_url_without_password(client):
    first = RunningStack(client, URL_WITH_PASSWORD, pid=os.getppid())  # a live process
    first.claim()
    with pytest.raises(StackAlreadyRunning) as refused:
        RunningStack(client, URL_WITH_PASSWORD).claim()
    message = str(refused.value)
    assert "already running on REDIS_URL=redis://127.0.0.1:6399/0" in message
    assert f"(pid {os.getppid()} on " in message and "s3cret" not in message
    assert 0 < client.pttl(MARKER_KEY) <= MARKER_TTL_MS


def test_a_running_governor_refuses_a_new_up_and_the_refused_up_leaves_no_marker(client):
    client.set(GOVERNOR_KEYS[0], "cc8a3280aaaa", px=20_000)
    with pytest.raises(StackAlreadyRunning, match=r"REDIS_URL=redis://127\.0\.0\.1:6399/0: governor cc8a3280 "
                                                  r"holds the lease \(for another 20 s\)"):
        RunningStack(client, URL_WITH_PASSWORD).claim()
    assert client.get(MARKER_KEY) is None


def test_a_marker_left_by_a_dead_up_of_this_host_is_taken_over(client):
    RunningStack(client, URL_WITH_PASSWORD, pid=_dead_pid()).claim()
    second = RunningStack(client, URL_WITH_PASSWORD)
    second.claim()
    assert client.get(MARKER_KEY).decode() == second.value


def test_the_marker_is_kept_while_running_put_back_if_lost_and_released_only_by_its_holder(client):
    mine = RunningStack(client, URL_WITH_PASSWORD)
    mine.claim()
    client.pexpire(MARKER_KEY, 100)
    assert mine.keep() and client.pttl(MARKER_KEY) > 100
    client.delete(MARKER_KEY)  # a Redis restarted without it
    assert mine.keep() and client.get(MARKER_KEY).decode() == mine.value
    other = RunningStack(client, URL_WITH_PASSWORD, pid=4242)
    assert not other.release() and client.get(MARKER_KEY) is not None
    assert mine.release() and client.get(MARKER_KEY) is None
