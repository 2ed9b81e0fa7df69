"""The governor's batch loop, step by step, on a real redis-server (Keepa and the clock are faked:
they lie outside). What is checked is what Redis holds afterwards, as Dramatiq's workers see it."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest
from dramatiq import Message
from dramatiq.common import current_millis

from actors import doorbell as doorbell_module
from actors import governor_loop
from actors.broker import make_broker
from actors.dispatch import Dispatch
from actors.doorbell import BELL_KEY, Doorbell
from actors.governor_actor import STALE_GRANT_MS, GovernorHost
from actors.governor_loop import GovernorLoop
from actors.grant_claims import ATTEMPTS_KEY, CLAIM_PREFIX
from actors.ledger import GRANT_LOG_KEY, KEYS, SNAPSHOT_KEY, Ledger
from governor.config import GovernorConfig
from keepa_api.tokens import Envelope
from tests.services import free_port
from tests.stack import wait_for

NOW = current_millis()  # Dramatiq stamps delayed messages on the real clock: the fake one starts there


@pytest.fixture
def loop(redis_server):
    broker = make_broker(redis_server)
    broker.client.flushdb()
    clock = SimpleNamespace(ms=NOW)
    host = GovernorHost(Ledger(broker.client, holder="me"), broker, GovernorConfig(),
                        lambda: Envelope(clock.ms, 1_000, 60_000, 100), clock_ms=lambda: clock.ms)
    stop = threading.Event()
    stop.set()  # the loop never waits when idle: the test drives it step by step
    doorbell = Doorbell(redis_server, max_wait_s=30.0)
    loop = GovernorLoop(SimpleNamespace(host=host), stop, doorbell)
    loop.clock = clock
    loop.sender = make_broker(redis_server)        # a worker's broker
    yield loop
    loop.sender.close()
    doorbell.close()
    broker.client.flushdb()
    broker.close()


def _request(rid: str, args=None) -> Message:
    return Message(queue_name="governor", actor_name="keepa_governor", kwargs={}, options={},
                   args=args or ("request", {"id": rid, "cls": "commit", "units": 1,
                                             "payload": {"asins": ["B000000001"]}}))


def _ask(broker, *rids, args=None) -> None:
    Dispatch(broker).send([(_request(rid, args), None) for rid in rids])


def _ids(broker, queue: str) -> list[bytes]:
    return broker.client.lrange(f"dramatiq:{queue}", 0, -1)


def _acks(broker) -> int:
    return broker.client.scard(f"dramatiq:__acks__.{broker.broker_id}.governor")


def test_a_batch_is_granted_written_and_acknowledged_in_one_step(loop):
    broker = loop.host.broker
    _ask(broker, "a", "b", "c")
    loop.step()
    grants = [Message.decode(broker.client.hget("dramatiq:commit.msgs", i)) for i in _ids(broker, "commit")]
    assert [g.args[0] for g in grants] == ["a", "b", "c"]
    assert broker.client.lrange(GRANT_LOG_KEY, 0, -1) == [b"a", b"b", b"c"]  # logged in the same step
    assert _ids(broker, "governor") == [] and _acks(broker) == 0
    assert not broker.client.hlen("dramatiq:governor.msgs")          # acknowledged: bodies gone
    assert sorted(broker.client.hkeys(KEYS[3])) == [b"a", b"b", b"c"]  # in flight, durably
    assert not broker.client.hlen(KEYS[2])                            # asked and granted: never pending
    assert json.loads(broker.client.get(SNAPSHOT_KEY))["leader"]["id"] == "me"


def test_a_batch_that_cannot_be_written_goes_back_to_the_queue_at_once(loop):
    broker = loop.host.broker
    _ask(broker, "a")
    loop.step()
    broker.client.set(KEYS[0], "another governor")  # the lease passes on while this one still runs
    _ask(broker, "b", "c")
    loop.step()
    assert len(_ids(broker, "governor")) == 2 and _acks(broker) == 0   # handed back, not stuck in our ack set
    assert len(_ids(broker, "commit")) == 1                             # nothing granted without the lease
    assert loop.host.gov is None                                        # state dropped, reloaded on return
    broker.client.delete(KEYS[0])
    loop.step()
    assert len(_ids(broker, "commit")) == 3 and _ids(broker, "governor") == []


def test_messages_it_could_not_hand_back_while_redis_was_gone_go_back_once_it_answers(loop, monkeypatch):
    broker = loop.host.broker
    _ask(broker, "a")
    loop.step()
    broker.client.set(KEYS[0], "another governor")  # the batch cannot be written: it must go back
    _ask(broker, "b", "c")
    requeue = loop.dispatch.requeue

    def redis_gone(queue_name, messages):
        raise ConnectionError("Redis is gone")

    monkeypatch.setattr(loop.dispatch, "requeue", redis_gone)
    loop.step()
    assert _acks(broker) == 2 and _ids(broker, "governor") == []  # fetched, stuck in this live process's ack set
    monkeypatch.setattr(loop.dispatch, "requeue", requeue)
    broker.client.delete(KEYS[0])
    loop.step()                                                     # handed back, then fetched and granted
    assert _acks(broker) == 0 and len(_ids(broker, "commit")) == 3


def test_messages_a_failed_fetch_took_go_back_even_though_its_reply_was_lost(loop, monkeypatch):
    broker = loop.host.broker
    _ask(broker, "a")
    loop.step()
    _ask(broker, "b", "c")
    fetch = loop.dispatch.fetch

    def reply_lost(wanted):
        fetch(wanted)  # Redis moved them to this process's ack set, then the connection dropped
        raise ConnectionError("Connection closed by server.")

    monkeypatch.setattr(loop.dispatch, "fetch", reply_lost)
    with pytest.raises(ConnectionError):
        loop.step()
    loop.failed_step()  # what the loop does after a step raised
    monkeypatch.setattr(loop.dispatch, "fetch", fetch)
    assert _acks(broker) == 2
    loop.step()
    assert _acks(broker) == 0 and len(_ids(broker, "commit")) == 3


def test_a_malformed_message_is_dropped_and_the_rest_of_its_batch_granted(loop, caplog):
    broker = loop.host.broker
    _ask(broker, "x", args=("request", {"cls": "commit"}))
    _ask(broker, "a")
    loop.step()
    assert "MalformedMessage dropped" in caplog.text
    assert len(_ids(broker, "commit")) == 1 and _ids(broker, "governor") == [] and _acks(broker) == 0


def test_a_delayed_message_is_held_until_due_then_applied(loop):
    broker = loop.host.broker
    Dispatch(broker).send([(Message(queue_name="governor", actor_name="keepa_governor", kwargs={}, options={},
                                    args=("request", {"id": "later", "cls": "commit", "units": 1})), 60_000)])
    loop.step()
    assert _ids(broker, "commit") == [] and len(loop.held) == 1
    eta = loop.held[0][0]
    loop.clock.ms = eta + 1
    loop._dq_polled = 0.0
    loop.step()                # due: moved to the governor queue
    loop.step()                # and granted
    assert len(_ids(broker, "commit")) == 1 and loop.held == []
    assert broker.client.llen("dramatiq:governor.DQ") == 0


def test_a_stopped_loop_gives_its_lease_up_so_the_next_governor_takes_over_at_once(loop):
    broker = loop.host.broker
    _ask(broker, "a")
    loop.step()
    assert loop.host.ledger.leader() == "me"
    loop.run()  # the stop event is set: the loop ends at once, as after SIGTERM
    assert loop.host.ledger.leader() is None
    assert Ledger(broker.client, holder="next").acquire()
    loop.host.ledger.release()  # not the holder any more: the next governor keeps it
    assert Ledger(broker.client, holder="next").leader() == "next"


def test_an_unsettled_grant_is_sent_again_only_if_no_live_attempt_holds_it(loop, caplog):
    broker = loop.host.broker
    _ask(broker, "slow", "gone", "lost", "done")
    loop.step()
    stale_at = NOW + STALE_GRANT_MS
    for gid, state, beat_ms in (("slow", "calling", stale_at - 1_000), ("gone", "calling", stale_at - 60_000),
                                ("done", "done", None)):
        broker.client.set(CLAIM_PREFIX + gid, json.dumps({"state": state, "owner": f"worker-{gid}/1",
                                                          "since_ms": NOW}))
        if beat_ms is not None:
            broker.client.zadd(ATTEMPTS_KEY, {f"worker-{gid}/1": beat_ms})
    loop.clock.ms = stale_at
    _ask(broker, "next", args=("wake", {}))
    loop.step()
    grants = [Message.decode(raw).args[0] for raw in broker.client.hvals("dramatiq:commit.msgs")]
    assert sorted(grants) == ["done", "gone", "gone", "lost", "lost", "slow"]  # resent: gone and lost only
    assert "grant slow has not settled in 120 s: calling by worker worker-s, still at it" in caplog.text
    assert "grant done has not settled in 120 s: done by worker worker-d, its settle is on its way" in caplog.text
    assert "grant gone has not settled in 120 s: calling by worker worker-g, gone; sending it again" in caplog.text
    assert "grant lost has not settled in 120 s: never claimed; sending it again" in caplog.text


# -- the doorbell ---------------------------------------------------------------------------------

def test_a_message_sent_to_the_idle_governor_wakes_it_at_once(loop, monkeypatch):
    broker = loop.host.broker
    monkeypatch.setattr(governor_loop, "DQ_POLL_S", 30.0)  # nothing else due for half a minute
    loop.step()                                             # takes the lease; nothing to do
    loop.stop = threading.Event()                           # from now on an idle step waits
    waited = threading.Thread(target=loop.step, daemon=True)
    waited.start()                                          # the queue is empty: it waits on the bell
    wait_for(lambda: any(c.get("cmd", "").lower() == "blpop" for c in broker.client.client_list()), 5,
             "the governor to block on its doorbell", every_s=0.001)
    assert waited.is_alive()
    loop.sender.enqueue(_request("a"))                     # a worker's enqueue rings the bell
    waited.join(5)
    assert not waited.is_alive(), "the bell did not wake the governor"
    loop.step()
    assert len(_ids(broker, "commit")) == 1


def test_an_idle_governor_naps_exactly_until_its_own_wake_when_it_is_close(loop):
    naps, waits = [], []
    loop.step()
    loop.stop = SimpleNamespace(is_set=lambda: False, wait=naps.append)
    loop.doorbell = SimpleNamespace(wait=waits.append)
    loop.host.host["wake_at"] = NOW + 150   # closer than two Redis ticks: BLPOP would be late
    loop.step()
    assert naps == [0.15] and waits == []


def test_an_idle_governor_waits_on_the_bell_until_a_tick_before_its_wake(loop, monkeypatch):
    monkeypatch.setattr(governor_loop, "DQ_POLL_S", 30.0)  # the delay queue is not due for a while
    naps, waits = [], []
    loop.step()
    loop.stop = SimpleNamespace(is_set=lambda: False, wait=naps.append)
    loop.doorbell = SimpleNamespace(wait=waits.append)
    loop.host.host["wake_at"] = NOW + 500
    loop.step()
    assert naps == [] and waits == [pytest.approx(0.4)]  # then the exact nap covers the last 0.1 s


def test_only_undelayed_messages_for_the_governor_ring_and_the_bell_never_piles_up(loop):
    sender, bells = loop.sender, lambda: loop.sender.client.llen(BELL_KEY)
    sender.enqueue(Message(queue_name="commit", actor_name="keepa_commit", args=("g", {}), kwargs={}, options={}))
    sender.enqueue(_request("later"), delay=60_000)
    assert bells() == 0
    for rid in ("a", "b", "c"):
        sender.enqueue(_request(rid))
    assert bells() == 1
    assert loop.doorbell.wait(1.0) is True and bells() == 0      # waking takes the bell
    assert loop.doorbell.wait(0.1) is False                      # nothing rang since: it times out


def test_a_step_that_moved_due_delayed_messages_fetches_again_without_waiting(loop):
    broker = loop.host.broker
    Dispatch(broker).send([(_request("later"), 60_000)])
    loop.step()
    loop.clock.ms = loop.held[0][0] + 1
    loop._dq_polled = 0.0
    waits = []
    loop.stop = SimpleNamespace(is_set=lambda: False, wait=waits.append)
    loop.doorbell = SimpleNamespace(wait=waits.append)
    loop.step()                # due: moved to the governor queue, fetched at once by the next step
    assert waits == []
    loop.step()
    assert len(_ids(broker, "commit")) == 1


def test_a_doorbell_that_cannot_reach_redis_naps_instead(monkeypatch):
    naps = []
    monkeypatch.setattr(doorbell_module.time, "sleep", naps.append)
    doorbell = Doorbell(f"redis://127.0.0.1:{free_port()}/0", max_wait_s=1.0)  # nothing listens there
    assert doorbell.wait(0.25) is False and naps == [0.25]
    doorbell.close()
