"""What makes the processes `keepa-deals up` starts end with it: parent-death signals, the watch on
`up` itself, stop handlers that survive a burst of signals, and noticing a closed output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from keepa_deals.lifeline import UP_PID_VARIABLE, output_closed, started_by
from tests.stack import read_line, wait_for

ROOT = Path(__file__).resolve().parent.parent
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="prctl, pidfd and /proc are Linux's")


def _python(code: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, text=True, **kwargs)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


STOPPER = """
from keepa_deals.lifeline import stop_on_signals
import signal
seen = []
stop = stop_on_signals((signal.SIGTERM,), then=seen.append)
print("ready", flush=True)
stop.wait()
print("stopped", flush=True)
"""


@linux_only
def test_a_burst_of_sigterms_stops_the_process_and_it_exits():
    """honcho's group signal, supervise's forward and a parent-death signal arrive within a
    millisecond; a handler that set an Event itself could deadlock on the Event's lock."""
    child = _python(STOPPER)
    try:
        assert read_line(child.stdout, 20, "the child ready") == "ready\n"
        for _ in range(2000):
            try:
                os.kill(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                break
        # it stopped through its event; a SIGTERM still arriving while the interpreter exits (which
        # restores the default handlers) may end it on the way out, which changes nothing here
        assert child.wait(10) in (0, -signal.SIGTERM)
        assert child.stdout.read() == "stopped\n"
    finally:
        child.kill()


@linux_only
def test_a_child_started_with_die_with_parent_ends_when_its_parent_is_sigkilled():
    parent = _python("import subprocess, time\n"
                     "from keepa_deals.lifeline import die_with_parent\n"
                     "child = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent())\n"
                     "print(child.pid, flush=True)\n"
                     "time.sleep(60)\n")
    grandchild = int(read_line(parent.stdout, 20, "the child's pid"))
    try:
        assert _alive(grandchild)
        parent.kill()
        parent.wait()
        wait_for(lambda: not _alive(grandchild), 5, "the child of a SIGKILLed parent to end", every_s=0.05)
    finally:
        if _alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


@linux_only
def test_a_process_started_under_up_stops_when_up_is_sigkilled_though_up_is_not_its_parent():
    up = subprocess.Popen(["sleep", "60"])  # stands for `keepa-deals up`
    follower = _python("from keepa_deals.lifeline import follow_up\n" + STOPPER.replace(
        'print("ready"', 'assert follow_up()\nprint("ready"'), env={UP_PID_VARIABLE: str(up.pid)})
    try:
        assert read_line(follower.stdout, 20, "the follower ready") == "ready\n"
        assert started_by(up.pid) == [follower.pid]
        assert follower.poll() is None
        up.kill()
        assert follower.wait(5) == 0 and follower.stdout.read() == "stopped\n"
        assert started_by(up.pid) == []
    finally:
        up.kill()
        follower.kill()


@linux_only
def test_a_process_whose_up_ended_before_it_started_stops_at_once():
    up = subprocess.Popen(["true"])
    up.wait()
    follower = _python("from keepa_deals.lifeline import follow_up\n" + STOPPER.replace(
        'print("ready"', 'follow_up()\nprint("ready"'), env={UP_PID_VARIABLE: str(up.pid)})
    try:
        assert follower.wait(10) == 0 and follower.stdout.read() == "ready\nstopped\n"
    finally:
        follower.kill()


def test_a_closed_output_is_noticed_without_writing_to_it():
    reader, writer = os.pipe()
    try:
        assert not output_closed(writer)
        os.close(reader)
        assert output_closed(writer)
    finally:
        os.close(writer)
    with tempfile.TemporaryFile() as regular:
        assert not output_closed(regular.fileno())


def test_the_screen_stops_writing_quietly_once_its_reader_is_gone():
    from keepa_deals.screen import Screen

    reader, writer = os.pipe()
    stream = os.fdopen(writer, "w")
    screen = Screen(stream)
    try:
        screen.line("one")
        assert os.read(reader, 100) == b"one\n" and not screen.closed
        os.close(reader)
        screen.line("two")  # EPIPE: no exception
        assert screen.closed
        screen.line("three")
    finally:
        stream.close()


@linux_only
def test_the_redis_guard_stops_redis_only_once_the_stacks_clients_have_disconnected(tmp_path):
    import redis

    from tests.services import free_port

    port = free_port()
    guard = subprocess.Popen([sys.executable, "-m", "keepa_deals.cli", "redis-guard", "--port", str(port), "--",
                              "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                              "--save", "", "--appendonly", "no"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    try:
        wait_for(lambda: _pings(client), 20, "redis-server under its guard")
        guard.send_signal(signal.SIGTERM)  # what `up` sends after honcho has stopped
        assert "stopping redis-server once the stack's clients have gone" in read_line(
            guard.stderr, 10, "the guard taking the stop")
        with pytest.raises(subprocess.TimeoutExpired):  # a negative check needs a window: 1 s, a tenth of the grace
            guard.wait(1.0)
        assert client.ping()  # a draining worker still settles: Redis answers after the stop was taken
        assert guard.poll() is None
        client.close()
        assert guard.wait(5) == 0
        assert not _pings(redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1))
    finally:
        guard.kill()


def _pings(client) -> bool:
    import redis

    try:
        return client.ping()
    except redis.RedisError:
        return False
