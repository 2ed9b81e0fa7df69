"""actors.dispatch against a real redis-server and a real Dramatiq worker: what it writes is exactly
what Dramatiq's own consumers read and acknowledge (the guard for a Dramatiq release that changes
its dispatch script's arguments or the consumer's bookkeeping)."""

from __future__ import annotations

import threading
import time
import uuid

import dramatiq
import pytest
from dramatiq import Message
from dramatiq.middleware import Middleware

from actors.broker import make_broker
from actors.dispatch import Dispatch
from actors.ledger import KEYS, Ledger, Ops


@pytest.fixture
def broker(redis_server):
    broker = make_broker(redis_server, namespace=f"dispatch-{uuid.uuid4().hex[:8]}")
    yield broker
    broker.client.flushdb()  # only this test's namespace matters, but the keys are throwaway anyway
    broker.close()


def _message(queue: str, i: int) -> Message:
    return Message(queue_name=queue, actor_name="collect", args=(i,), kwargs={}, options={})


def test_sent_messages_reach_a_real_worker_and_delayed_ones_wait_on_the_delay_queue(broker):
    class Seen(Middleware):
        def __init__(self):
            self.before, self.after = [], []

        def before_enqueue(self, broker, message, delay):
            self.before.append(message.message_id)

        def after_enqueue(self, broker, message, delay):
            self.after.append(message.message_id)

    seen = Seen()
    broker.add_middleware(seen)
    got, done = [], threading.Event()

    @dramatiq.actor(broker=broker, queue_name="q", actor_name="collect", max_retries=0)
    def collect(i):
        got.append(i)
        if len(got) == 50:
            done.set()

    sent_ms = int(time.time() * 1000)
    sent = Dispatch(broker).send([(_message("q", i), None) for i in range(50)] + [(_message("q", 99), 60_000)])
    assert len(sent) == 51 and seen.before == seen.after == [m.message_id for m in sent]
    worker = dramatiq.Worker(broker, queues={"q"}, worker_threads=2, worker_timeout=20)
    worker.start()
    try:
        assert done.wait(10), f"only {len(got)} of 50 messages arrived"
    finally:
        worker.stop(timeout=2_000)
    assert sorted(got) == list(range(50))
    delayed = sent[-1]
    assert delayed.queue_name == "q.DQ"
    assert broker.client.lrange(f"{broker.namespace}:q.DQ", 0, -1) == [delayed.options["redis_message_id"].encode()]
    eta = delayed.options["eta"]
    assert sent_ms + 60_000 <= eta <= int(time.time() * 1000) + 60_000


def test_fetch_ack_and_requeue_keep_dramatiqs_bookkeeping(broker):
    broker.declare_queue("q2")
    dispatch = Dispatch(broker)
    dispatch.send([(_message("q2", i), None) for i in range(20)])
    first, empty = dispatch.fetch([("q2", 15), ("q2.DQ", 5)])
    (rest,) = dispatch.fetch([("q2", 15)])
    fetched = first + rest
    assert [m.args[0] for m in fetched] == list(range(20)) and empty == []
    acks_key = f"{broker.namespace}:__acks__.{broker.broker_id}.q2"
    assert broker.client.scard(acks_key) == 20
    dispatch.send([], [("q2", m) for m in fetched[:18]])
    left = {m.options["redis_message_id"].encode() for m in fetched[18:]}
    assert broker.client.smembers(acks_key) == left
    assert set(broker.client.hkeys(f"{broker.namespace}:q2.msgs")) == left
    dispatch.requeue("q2", fetched[17:])  # one acknowledged already: left alone
    assert set(broker.client.lrange(f"{broker.namespace}:q2", 0, -1)) == left
    assert broker.client.scard(acks_key) == 0
    (again,) = dispatch.fetch([("q2", 15)])
    assert [m.args[0] for m in again] == [18, 19]


def test_a_restarted_redis_without_the_scripts_is_handled(broker):
    dispatch = Dispatch(broker)
    broker.client.script_flush()        # what a restart without persistence of scripts looks like
    dispatch.send([(_message("q3", 1), None)])
    assert broker.client.llen(f"{broker.namespace}:q3") == 1
    broker.client.script_flush()
    (fetched,) = dispatch.fetch([("q3", 5)])
    assert [m.args[0] for m in fetched] == [1]


def test_the_ledger_writes_sends_and_acknowledges_in_one_step_or_not_at_all(broker):
    dispatch = Dispatch(broker)
    dispatch.send([(_message("governor", i), None) for i in range(3)])
    (fetched,) = dispatch.fetch([("governor", 10)])
    acks_key = f"{broker.namespace}:__acks__.{broker.broker_id}.governor"
    ledger, usurper = Ledger(broker.client, holder="me"), Ledger(broker.client, holder="usurper")
    broker.client.delete(*KEYS)
    assert usurper.acquire()
    ops = Ops()
    ops.pending_add.append(["r1", "{}"])
    grants = [(_message("commit", 7), None), (_message("governor", 8), 5_000)]
    assert not ledger.commit(ops, None, dispatch.outbox(grants, [("governor", m) for m in fetched]))
    assert broker.client.llen(f"{broker.namespace}:commit") == 0
    assert broker.client.scard(acks_key) == 3 and not broker.client.hlen(KEYS[2])
    broker.client.delete(KEYS[0])  # the usurper's lease runs out
    box = dispatch.outbox(grants, [("governor", m) for m in fetched])
    assert ledger.commit(ops, None, box)
    sent = box.delivered()
    assert broker.client.hkeys(KEYS[2]) == [b"r1"]
    assert broker.client.lrange(f"{broker.namespace}:commit", 0, -1) == [sent[0].options["redis_message_id"].encode()]
    assert broker.client.llen(f"{broker.namespace}:governor.DQ") == 1 and sent[1].queue_name == "governor.DQ"
    assert broker.client.scard(acks_key) == 0 and broker.client.hlen(f"{broker.namespace}:governor.msgs") == 0


def test_the_ledger_keeps_the_newest_finished_ids_up_to_the_policys_count(broker):
    ledger = Ledger(broker.client, holder="me")
    broker.client.delete(*KEYS)
    ops = Ops()
    ops.done_add = [[f"r{i}", 1_000 + i] for i in range(5)]
    ops.done_before, ops.done_keep = 1_000, 3   # r0 is too old, and only 3 may stay
    assert ledger.commit(ops)
    assert broker.client.zrange(KEYS[4], 0, -1) == [b"r2", b"r3", b"r4"]
