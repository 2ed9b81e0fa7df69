"""The governor's batch loop, step by step, on a real redis-server (Keepa and the clock are faked:
they lie outside). What is checked is what Dramatiq's public API and the governor's own keys show
afterwards, as Dramatiq's workers and the next governor see them."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest
import redis
from dramatiq.errors import ConnectionClosed

from actors import doorbell as doorbell_module
from actors import governor_loop
from actors.broker import HEARTBEAT_TIMEOUT_MS, make_broker
from actors.doorbell import BELL_KEY, Doorbell
from actors.governor_host import STALE_GRANT_MS
from actors.grant_claims import ATTEMPTS_KEY, CLAIM_PREFIX
from actors.ledger import GRANT_LOG_KEY, KEYS, OUTBOX_KEY, SNAPSHOT_KEY, Ledger
from actors.messages import to_governor
from keepa_api.tokens import Envelope
from tests.governor_rig import NOW, ask, close_loop, make_loop, request, settled, take
from tests.services import free_port
from tests.stack import wait_for


@pytest.fixture
def loop(redis_server):
    loop = make_loop(redis_server)
    loop.host.broker.client.flushdb()
    loop.url = redis_server
    loop.sender = make_broker(redis_server)        # a worker's broker
    yield loop
    loop.sender.client.flushdb()
    loop.sender.close()
    close_loop(loop)


def _granted(loop) -> list[str]:
    return sorted(g.args[0] for g in take(loop.sender, "commit"))


def test_a_batch_is_granted_written_sent_and_acknowledged_in_one_step(loop):
    client = loop.sender.client
    ask(loop.sender, "a", "b", "c")
    loop.step()
    assert _granted(loop) == ["a", "b", "c"]
    assert client.lrange(GRANT_LOG_KEY, 0, -1) == [b"a", b"b", b"c"]   # logged in the same write
    assert settled(loop.sender, "governor")                             # every request acknowledged
    assert client.hlen(OUTBOX_KEY) == 0                                 # sent: out of the outbox
    assert sorted(client.hkeys(KEYS[3])) == [b"a", b"b", b"c"]           # in flight, durably
    assert not client.hlen(KEYS[2])                                      # asked and granted: never pending
    assert json.loads(client.get(SNAPSHOT_KEY))["leader"]["id"] == "me"


def test_a_batch_that_cannot_be_written_goes_back_to_the_queue_at_once(loop):
    client = loop.sender.client
    ask(loop.sender, "a")
    loop.step()
    assert _granted(loop) == ["a"]
    client.set(KEYS[0], "another governor")  # the lease passes on while this one still runs
    ask(loop.sender, "b", "c")
    loop.step()                               # fetched, applied, refused by the fenced write
    assert _granted(loop) == []                                             # nothing granted without the lease
    assert loop.host.gov is None and loop.batch == []                       # state dropped, batch handed back
    assert sorted(m.args[1]["id"] for m in take(loop.sender, "governor")) == ["b", "c"]   # on the queue again
    ask(loop.sender, "b", "c")                # (taken off by the line above: asked again)
    client.delete(KEYS[0])
    loop.step()
    assert _granted(loop) == ["b", "c"] and settled(loop.sender, "governor")


def test_a_full_batch_handed_back_after_a_failed_step_is_fetched_and_granted_by_the_same_loop(redis_server,
                                                                                             monkeypatch):
    """A step fails (here: the first apply raises) with a full batch in hand: the batch goes back to
    the queue and the same loop, holding the same lease, fetches and grants every message next."""
    loop = make_loop(redis_server, batch_max=4)
    sender = make_broker(redis_server)
    try:
        loop.host.broker.client.flushdb()
        ask(sender, "a", "b", "c", "d", "e")
        apply, failures = loop.host.apply, []

        def fails_once(kind, body, now, ops):
            if not failures:
                failures.append(body["id"])
                raise RuntimeError("a passing fault")
            return apply(kind, body, now, ops)

        monkeypatch.setattr(loop.host, "apply", fails_once)
        with pytest.raises(RuntimeError):
            loop.step()                                  # a full batch of 4 in hand
        loop.failed_step(RuntimeError("a passing fault"))
        for _ in range(4):
            loop.step()
        assert sorted(g.args[0] for g in take(sender, "commit")) == ["a", "b", "c", "d", "e"]
        assert settled(sender, "governor") and loop.host.ledger.leader() == "me"
    finally:
        sender.client.flushdb()
        sender.close()
        close_loop(loop)


def test_a_fetch_whose_reply_was_lost_is_left_to_dramatiqs_maintenance_under_a_new_broker(loop, monkeypatch):
    """The fetch moved messages to this broker's unacknowledged set and its reply never came: the
    loop cannot see them and reads none of Dramatiq's keys, so it takes a new broker (a new id). Once
    the old id's heartbeat is 15 s stale, the next command on the queue with a maintenance roll (any
    process's) puts them back. The 15 s pass on an injected clock: the sender's Dramatiq stamps its
    command 15 s later (the script compares the caller's timestamps, not Redis's clock)."""
    import dramatiq.brokers.redis as dramatiq_redis

    ask(loop.sender, "a")
    loop.step()
    assert _granted(loop) == ["a"]
    old = loop.host.broker
    ask(loop.sender, "b", "c")
    consumer_class = type(loop._consumer())
    real_next = consumer_class.__next__

    def reply_lost(self):
        real_next(self)   # Redis moved them to this broker's unacknowledged set; the reply is lost
        raise ConnectionClosed(redis.ConnectionError("Connection closed by server."))   # as Dramatiq wraps it

    monkeypatch.setattr(consumer_class, "__next__", reply_lost)
    with pytest.raises(ConnectionClosed) as raised:
        loop.step()
    monkeypatch.setattr(consumer_class, "__next__", real_next)
    loop.failed_step(raised.value)
    assert loop.host.broker is not old                 # a new broker: a new id, its own heartbeat
    assert loop.host.gov is None                      # the state reloads
    loop.step()
    assert _granted(loop) == []                       # b and c are held under the old id, unseen
    assert not settled(loop.sender, "governor")
    later = make_broker(loop.url, maintenance_chance=1_000_000)   # a worker whose command rolls maintenance
    now_ms = dramatiq_redis.current_millis()
    monkeypatch.setattr(dramatiq_redis, "current_millis", lambda: now_ms + HEARTBEAT_TIMEOUT_MS + 1)
    later.enqueue(to_governor("wake", {}))            # a message for the governor, 15 s on
    monkeypatch.undo()
    later.close()
    loop.step()
    assert _granted(loop) == ["b", "c"] and settled(loop.sender, "governor")


def test_a_dropped_ledger_connection_hands_the_batch_back_at_once_on_the_same_broker(loop, monkeypatch):
    """The governor's own write loses its connection (Redis is up again at once): nothing was fetched
    unseen, so the batch goes back to the queue now and the next step grants it, with no wait for
    Dramatiq's maintenance under a new broker."""
    ask(loop.sender, "a", "b")
    old = loop.host.broker
    real_commit = loop.host.ledger.commit

    def dropped(*args, **kwargs):
        raise redis.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(loop.host.ledger, "commit", dropped)
    with pytest.raises(redis.ConnectionError) as raised:
        loop.step()
    monkeypatch.setattr(loop.host.ledger, "commit", real_commit)
    loop.failed_step(raised.value)
    assert loop.host.broker is old
    loop.step()
    assert _granted(loop) == ["a", "b"] and settled(loop.sender, "governor")


def test_a_malformed_message_is_dead_lettered_and_the_rest_of_its_batch_granted(loop, caplog):
    nacked = []
    consumer = loop._consumer()
    real_nack = consumer.nack
    consumer.nack = lambda message: (nacked.append(message.args), real_nack(message))
    loop.sender.enqueue(to_governor("request", {"cls": "commit"}))   # no id
    ask(loop.sender, "a")
    loop.step()
    assert "MalformedMessage dead-lettered" in caplog.text
    assert nacked == [("request", {"cls": "commit"})]
    assert _granted(loop) == ["a"] and settled(loop.sender, "governor")   # neither waiting nor held


def test_a_message_whose_step_keeps_failing_is_dead_lettered_after_three_attempts(loop, monkeypatch):
    """A poison message (its step raises, not as malformed) is tried ``MAX_ATTEMPTS`` times, the
    batch handed back each time, then dead-lettered (Consumer.nack) so the rest of its batch goes on."""
    nacked = []
    apply = loop.host.apply

    def poisoned(kind, body, now, ops):
        if body.get("id") == "poison":
            raise RuntimeError("a bug this message trips")
        return apply(kind, body, now, ops)

    monkeypatch.setattr(loop.host, "apply", poisoned)
    ask(loop.sender, "a")
    loop.step()                                        # takes the lease, grants a
    loop.sender.enqueue(request("poison"))
    ask(loop.sender, "b")
    for attempt in range(1, governor_loop.MAX_ATTEMPTS + 1):
        consumer = loop._consumer()
        if not hasattr(consumer, "spied"):
            real_nack = consumer.nack
            consumer.nack = lambda message, real_nack=real_nack: (nacked.append(message.args[1]["id"]),
                                                                 real_nack(message))
            consumer.spied = True
        with pytest.raises(RuntimeError):
            loop.step()
        loop.failed_step(RuntimeError())
        assert nacked == ([] if attempt < governor_loop.MAX_ATTEMPTS else ["poison"])
    loop.step()
    assert _granted(loop) == ["a", "b"] and settled(loop.sender, "governor")


def test_the_governors_wake_comes_from_its_own_timer_not_a_delayed_message(loop):
    """No delayed message is sent anywhere: the wake the policy asks for is kept in the governor's
    state and the loop decides when its injected clock reaches it, with nothing on any queue."""
    client = loop.sender.client
    loop.host.token_source = lambda: Envelope(loop.clock.ms, 0, 60_000, 20)   # an empty bucket: 20 a minute
    ask(loop.sender, "a")
    loop.step()
    wake = loop.host.books["wake_at"]
    assert wake is not None and wake > loop.clock.ms and _granted(loop) == []
    assert settled(loop.sender, "governor")       # nothing waits for the governor, delayed or not
    loop.clock.ms = wake - 1
    loop.step()
    assert _granted(loop) == []                   # not yet
    loop.clock.ms = wake + 60_000                  # the refill has come: the timer is due
    loop.step()
    assert _granted(loop) == ["a"]
    assert client.lrange(GRANT_LOG_KEY, 0, -1) == [b"a"]


def test_a_stopped_loop_gives_its_lease_up_so_the_next_governor_takes_over_at_once(loop):
    client = loop.sender.client
    ask(loop.sender, "a")
    loop.step()
    assert loop.host.ledger.leader() == "me"
    loop.run()  # the stop event is set: the loop ends at once, as after SIGTERM
    assert loop.host.ledger.leader() is None and loop.consumer is None
    assert Ledger(client, holder="next").acquire()
    loop.host.ledger.release()  # not the holder any more: the next governor keeps it
    assert Ledger(client, holder="next").leader() == "next"


def test_an_unsettled_grant_is_sent_again_only_if_no_live_attempt_holds_it(loop, caplog):
    client = loop.sender.client
    ask(loop.sender, "slow", "gone", "lost", "done")
    loop.step()
    assert _granted(loop) == ["done", "gone", "lost", "slow"]
    stale_at = NOW + STALE_GRANT_MS
    for gid, state, beat_ms in (("slow", "calling", stale_at - 1_000), ("gone", "calling", stale_at - 60_000),
                                ("done", "done", None)):
        client.set(CLAIM_PREFIX + gid, json.dumps({"state": state, "owner": f"worker-{gid}/1", "since_ms": NOW}))
        if beat_ms is not None:
            client.zadd(ATTEMPTS_KEY, {f"worker-{gid}/1": beat_ms})
    loop.clock.ms = stale_at
    loop.sender.enqueue(to_governor("wake", {}))
    loop.step()
    assert _granted(loop) == ["gone", "lost"]          # sent again: gone and lost only
    assert "grant slow has not settled in 120 s: calling by worker worker-s, still at it" in caplog.text
    assert "grant done has not settled in 120 s: done by worker worker-d, its settle is on its way" in caplog.text
    assert "grant gone has not settled in 120 s: calling by worker worker-g, gone; sending it again" in caplog.text
    assert "grant lost has not settled in 120 s: never claimed; sending it again" in caplog.text


# -- the doorbell ---------------------------------------------------------------------------------

def test_a_message_sent_to_the_idle_governor_wakes_it_at_once(loop, monkeypatch):
    monkeypatch.setattr(governor_loop, "POLL_S", 30.0)     # nothing else due for half a minute
    loop.step()                                             # takes the lease; nothing to do
    loop.stop = threading.Event()                           # from now on an idle step waits
    waited = threading.Thread(target=loop.step, daemon=True)
    waited.start()                                          # the queue is empty: it waits on the bell
    client = loop.sender.client
    wait_for(lambda: any(c.get("cmd", "").lower() == "blpop" for c in client.client_list()), 5,
             "the governor to block on its doorbell", every_s=0.001)
    assert waited.is_alive()
    loop.sender.enqueue(request("a"))                      # a worker's enqueue rings the bell
    waited.join(5)
    assert not waited.is_alive(), "the bell did not wake the governor"
    loop.step()
    assert _granted(loop) == ["a"]


def test_an_idle_governor_naps_exactly_until_its_own_wake_when_it_is_close(loop):
    naps, waits = [], []
    loop.step()
    loop.stop = SimpleNamespace(is_set=lambda: False, wait=naps.append)
    loop.doorbell = SimpleNamespace(wait=waits.append)
    loop.host.books["wake_at"] = NOW + 150   # closer than two Redis ticks: BLPOP would be late
    loop.step()
    assert naps == [0.15] and waits == []


def test_an_idle_governor_waits_on_the_bell_until_a_tick_before_its_wake(loop, monkeypatch):
    monkeypatch.setattr(governor_loop, "POLL_S", 30.0)
    naps, waits = [], []
    loop.step()
    loop.stop = SimpleNamespace(is_set=lambda: False, wait=naps.append)
    loop.doorbell = SimpleNamespace(wait=waits.append)
    loop.host.books["wake_at"] = NOW + 500
    loop.step()
    assert naps == [] and waits == [pytest.approx(0.4)]  # then the exact nap covers the last 0.1 s


def test_an_idle_governor_with_no_wake_looks_at_its_queue_every_poll(loop):
    waits = []
    loop.step()
    loop.stop = SimpleNamespace(is_set=lambda: False, wait=waits.append)
    loop.doorbell = SimpleNamespace(wait=waits.append)
    loop.step()
    assert waits == [governor_loop.POLL_S]


def test_only_undelayed_messages_for_the_governor_ring_and_the_bell_never_piles_up(loop):
    sender, bells = loop.sender, lambda: loop.sender.client.llen(BELL_KEY)
    sender.enqueue(to_governor("wake", {}).copy(queue_name="commit", actor_name="keepa_commit"))
    sender.enqueue(request("later"), delay=60_000)
    assert bells() == 0
    for rid in ("a", "b", "c"):
        sender.enqueue(request(rid))
    assert bells() == 1
    assert loop.doorbell.wait(1.0) is True and bells() == 0      # waking takes the bell
    assert loop.doorbell.wait(0.1) is False                      # nothing rang since: it times out


def test_a_doorbell_that_cannot_reach_redis_naps_instead(monkeypatch):
    naps = []
    monkeypatch.setattr(doorbell_module.time, "sleep", naps.append)
    doorbell = Doorbell(f"redis://127.0.0.1:{free_port()}/0", max_wait_s=1.0)  # nothing listens there
    assert doorbell.wait(0.25) is False and naps == [0.25]
    doorbell.close()
