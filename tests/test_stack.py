"""The real stack: redis-server, Dramatiq worker processes, the embedded Keepa server over HTTP.

Every wait here is a bounded poll of an observable state, never a sleep standing in for time.
"""

import json
import subprocess
import sys

import pytest
from dramatiq import Message

from actors.governor_host import STALE_GRANT_MS
from tests.stack import ROOT, Stack, read_line, wait_for

pytestmark = pytest.mark.integration


def keepa_rules_held(stack):
    books = stack.keepa.books()
    assert books["min_balance"] >= -books["largest_call"], books
    return books


def test_the_stack_ingests_deals_end_to_end(stack):
    stack.start_all()
    wait_for(lambda: stack.ingested() >= 20, 90, "20 deals ingested")
    # the snapshot is written at most once a second: wait for it to catch up with the database
    snap = wait_for(lambda: (s := stack.snapshot()) and s["grants_total"]["commit"] >= 20 and s, 30,
                    "the governor's snapshot to count the commits")
    assert snap["grants_total"]["upsert"] >= 1
    keepa_rules_held(stack)
    assert "canary-key-7f3a9c" not in "".join(stack.log(n) for n in ("governor", "worker", "scheduler"))


def test_sigterm_drains_and_exits_cleanly(stack):
    stack.start_all()
    wait_for(lambda: stack.ingested() >= 5, 90, "5 deals ingested")
    for name in ("worker", "scheduler", "governor"):
        assert stack.terminate(name) == 0, stack.log(name)


def test_a_killed_worker_mid_commit_loses_nothing_and_ingestion_resumes(stack):
    stack.start_all()
    wait_for(lambda: stack.ingested() >= 5, 90, "5 deals ingested")
    stack.keepa.set_faults(slow_ms=1500)            # calls now take 1.5 s: kill one in the middle
    wait_for(lambda: stack.snapshot()["in_flight"]["commit"] + stack.snapshot()["in_flight"]["peek"] > 0,
             30, "a call in flight")
    in_flight_at_kill = stack.in_flight_ids()
    stack.kill("worker")
    stored, open_at_kill = stack.committed(), stack.unfinished(stack.states())
    stack.keepa.set_faults(slow_ms=0)
    stack.start("worker", "worker2")
    wait_for(lambda: len(stack.committed()) >= len(stored) + 10, 120, "10 more deals after the kill")
    wait_for(lambda: not in_flight_at_kill & stack.in_flight_ids(), 120,
             "the killed worker's grants to settle (redelivered, then released or stored)")
    stack.wait_finished(open_at_kill, STALE_GRANT_MS / 1000 + 60, "its claimed and viable candidates to finish")
    assert stored <= stack.committed()  # every deal stored before the kill is still there
    stack.assert_granted_once()
    keepa_rules_held(stack)


def test_a_killed_governor_loses_no_request_and_grants_none_twice(tmp_path):
    stack = Stack(tmp_path, refill_per_minute=5, start_tokens=0)   # a starved plan: requests pile up
    try:
        stack.start_all()
        wait_for(lambda: len(stack.pending_ids()) >= 3, 90, "requests waiting at the governor")
        waiting = stack.pending_ids()
        stack.kill("governor")
        survivors = waiting & stack.pending_ids()
        assert survivors, "the killed governor's pending requests must still be in Redis"
        granted_at_kill = set(stack.grant_log())
        stack.start("governor", "governor2")
        wait_for(lambda: survivors <= set(stack.grant_log()), 120, "every request that waited to be granted")
        log = stack.assert_granted_once()  # each exactly once: none lost, none granted twice
        assert all(log[rid] == 1 for rid in survivors | granted_at_kill)
        pending, in_flight = stack.pending_and_in_flight_ids()
        assert not (pending & in_flight)
        assert "took the lease" in stack.log("governor2")
        keepa_rules_held(stack)
    finally:
        stack.close()


def test_a_second_governor_stands_by(stack):
    stack.start_all()
    wait_for(lambda: stack.snapshot() is not None, 60, "the first governor's snapshot")
    leader = stack.snapshot()["leader"]["id"]
    stack.start("governor", "governor2")
    wait_for(lambda: "stands by" in stack.log("governor2"), 60, "the second governor to stand by")
    wait_for(lambda: stack.ingested() >= 10, 90, "ingestion with two governors running")
    assert stack.snapshot()["leader"]["id"] == leader
    assert "took the lease" not in stack.log("governor2")


def test_redis_restart_loses_nothing_and_ingestion_resumes(stack):
    stack.start_all()
    wait_for(lambda: stack.ingested() >= 5, 90, "5 deals ingested")
    granted = set(stack.grant_log())
    stack.redis_server.stop()      # SIGTERM: the append-only file is already fsynced
    stored, seen = stack.committed(), set(stack.states())
    open_at_restart = stack.unfinished(seen)
    stack.redis_server.start()
    wait_for(lambda: len(stack.committed()) >= len(stored) + 10, 120, "10 more deals after the Redis restart")
    # a grant whose attempt died with the connection, unacknowledged with a live worker (where
    # Dramatiq never redelivers it), is sent again by the governor after STALE_GRANT_MS
    stack.wait_finished(open_at_restart, STALE_GRANT_MS / 1000 + 60, "the claimed and viable candidates to finish")
    assert stored <= stack.committed() and seen <= set(stack.states())  # every stored deal still there
    assert granted <= set(stack.grant_log())  # the log of grants survived the restart with the rest
    stack.assert_granted_once()


@pytest.mark.parametrize("queue,actor,args", [
    ("governor", "keepa_governor", ("request", {"id": 7})),
    ("governor", "keepa_governor", ("explode", {})),
    ("upsert", "keepa_upsert", ("g1", {"page": "zero"})),
    ("peek", "keepa_peek", ("g2", {"asins": ["short"]})),
    ("commit", "keepa_commit", ("g3", "not an object")),
])
def test_a_malformed_message_is_dropped_with_a_clear_error(stack, queue, actor, args):
    stack.start_all()
    wait_for(lambda: stack.ingested() >= 3, 90, "3 deals ingested")
    from actors.broker import make_broker

    broker = make_broker(stack.redis_server.url)
    broker.enqueue(Message(queue_name=queue, actor_name=actor, args=args, kwargs={}, options={}))
    broker.close()
    name = "governor" if queue == "governor" else "worker"
    wait_for(lambda: "MalformedMessage" in stack.log(name), 30, "the malformed message to be reported")
    before = stack.ingested()
    wait_for(lambda: stack.ingested() > before, 90, "ingestion to go on")


@pytest.mark.parametrize("variable,value", [
    ("REDIS_URL", "http://nowhere"),
    ("DATABASE_URL", "mysql://x"),
    ("KEEPA_DOMAIN", "99"),
    ("METRICS_PORT", "eighty"),
    ("KEEPA_MINUTE_SECONDS", "-1"),
    ("KEEPA_SCREEN_DEALS", "maybe"),
])
def test_a_bad_setting_fails_at_start_naming_the_variable(variable, value, tmp_path):
    env = {"PATH": "/usr/bin:/bin", variable: value, "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    env[variable] = value
    result = subprocess.run([sys.executable, "-m", "keepa_deals.cli", "governor"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert variable in result.stderr and "Traceback" not in result.stderr


def test_redis_absent_at_start_is_reported_and_retried(tmp_path):
    from tests.services import free_port

    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
           "DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "KEEPA_API_URL": "http://127.0.0.1:9"}
    proc = subprocess.Popen([sys.executable, "-m", "keepa_deals.cli", "worker"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = read_line(proc.stdout, 30, "a log line")
        assert "does not answer" in line and "retrying" in line
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def test_status_json_reports_the_running_stack(stack):
    stack.start_all()
    wait_for(lambda: stack.ingested() >= 3, 90, "3 deals ingested")
    out = subprocess.run([sys.executable, "-m", "keepa_deals.cli", "status", "--json"], cwd=ROOT, env=stack.env,
                         capture_output=True, text=True, timeout=60)
    doc = json.loads(out.stdout)
    for key in ("deals_stored", "deals_ingested", "tokens_balance", "recharge_active", "pending"):
        assert key in doc
    assert doc["deals_ingested"] >= 3 and set(doc["pending"]) == {"upsert", "commit", "peek"}


def test_a_database_unavailable_for_a_while_loses_nothing_and_ingestion_resumes(stack):
    import sqlite3

    stack.start_all()
    wait_for(lambda: stack.ingested() >= 5, 90, "5 deals ingested")
    before = stack.ingested()
    blocker = sqlite3.connect(stack.db_url.removeprefix("sqlite:///"), timeout=30)
    logged = len(stack.log("worker"))  # a start that met the WAL switch's lock logged "locked" already
    blocker.execute("BEGIN EXCLUSIVE")  # nobody else may read or write until we let go
    try:
        wait_for(lambda: "unavailable" in stack.log("worker")[logged:], 60, "the worker to meet the locked database")
    finally:
        blocker.rollback()
        blocker.close()
    wait_for(lambda: stack.ingested() >= before + 10, 180, "10 more deals once the database is back")
    keepa_rules_held(stack)
