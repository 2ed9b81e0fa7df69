"""The governor's outbox: its grants and rejections are written with its state under the lease, then
handed to Dramatiq (``Broker.enqueue``), then taken out of the outbox. A governor that dies between
the write and the sends leaves them in the outbox, and the next leader sends them before anything
else, each with the Dramatiq message id it was written with; a worker that already ran a grant drops
the copy (its claim), so no grant is paid for twice.

A real redis-server and the real governor loop; the worker is the production step
(:meth:`actors.steps.Steps.commit`) on SQLite, against the embedded Keepa server counting calls."""

from __future__ import annotations

import pytest

from actors.broker import make_broker
from actors.ledger import GRANT_LOG_KEY, KEYS, OUTBOX_KEY, Ledger, Ops
from actors.messages import to_governor
from actors.steps import Steps
from tests import test_paid_once, test_steps
from tests.governor_rig import close_loop, make_loop, settled, take
from tests.test_paid_once import candidates
from tests.test_steps import Runtime

store, keepa = test_steps.store, test_paid_once.keepa   # SQLite; the embedded Keepa server, calls counted


class Crash(BaseException):
    """The governor process dies here (SIGKILL, power): nothing after this line runs."""


@pytest.fixture
def sender(redis_server):
    broker = make_broker(redis_server)     # a worker's broker
    broker.client.flushdb()
    yield broker
    broker.client.flushdb()
    broker.close()


@pytest.fixture
def governors(redis_server, sender):
    made = []

    def make(holder: str):
        made.append(make_loop(redis_server, holder=holder))
        return made[-1]

    yield make
    for loop in made:
        close_loop(loop)


def _commit_request(rid: str, asins: list[str]):
    return to_governor("request", {"id": rid, "cls": "commit", "units": 1, "payload": {"asins": asins}})


def test_grants_written_but_never_sent_are_sent_by_the_next_leader_with_the_same_message_ids(sender, governors,
                                                                                             monkeypatch):
    first = governors("first")
    for rid in ("a", "b"):
        sender.enqueue(_commit_request(rid, ["B000000001"]))

    def crash(message, *, delay=None):
        raise Crash()

    monkeypatch.setattr(first.host.broker, "enqueue", crash)
    with pytest.raises(Crash):
        first.step()                                      # written, then died before the first send
    written = {m.message_id: m.args for m in Ledger(sender.client).unsent()}
    assert sorted(args[0] for args in written.values()) == ["a", "b"]
    assert take(sender, "commit") == []                  # nothing reached Dramatiq
    sender.client.delete(KEYS[0])                        # the dead governor's lease runs out
    second = governors("second")
    second.step()                                        # takes over: the outbox goes first
    sent = {m.message_id: m.args for m in take(sender, "commit")}
    assert sent == written                               # the same messages, the same Dramatiq ids
    assert sender.client.hlen(OUTBOX_KEY) == 0
    assert sender.client.hlen(KEYS[3]) == 2              # in flight once each: not granted again
    assert sender.client.lrange(GRANT_LOG_KEY, 0, -1) == [b"a", b"b"]
    assert not settled(sender, "governor")               # the dead one's requests: unacknowledged, not lost


def test_a_grant_sent_again_from_the_outbox_after_a_crash_makes_no_second_keepa_call(sender, governors, store, keepa,
                                                                                    monkeypatch):
    catalogue, client = keepa
    asins = candidates(store, catalogue, 1)
    first = governors("first")
    sender.enqueue(_commit_request("commit:g:0", asins))

    def crash(message_ids):
        raise Crash()

    monkeypatch.setattr(first.host.ledger, "sent", crash)
    with pytest.raises(Crash):
        first.step()                                      # written and sent, died before clearing the outbox
    (grant,) = take(sender, "commit")
    worker = Runtime(sender.client, store, client, rate=1_000)
    Steps(worker).commit(*grant.args)                     # a worker runs the grant: one call, stored, settled
    assert client.calls == [("commit", tuple(asins))] and store.deals_ingested() == 1

    sender.client.delete(KEYS[0])                        # the dead governor's lease runs out
    second = governors("second")
    second.step()
    (again,) = take(sender, "commit")                     # the outbox, sent again
    assert again.message_id == grant.message_id and again.args == grant.args
    other = Runtime(sender.client, store, client, rate=1_000)
    Steps(other).commit(*again.args)                      # another worker process gets the copy
    assert client.calls == [("commit", tuple(asins))]      # no second Keepa call
    assert other.broker.sent == []                         # nor a second settle: the copy is dropped
    assert store.deals_ingested() == 1 and len(worker.broker.settles()) == 1


def test_a_write_the_lease_refuses_puts_nothing_in_the_outbox(sender):
    ledger = Ledger(sender.client, holder="late")
    sender.client.set(KEYS[0], "the leader")
    grant = to_governor("wake", {}).copy(queue_name="commit", actor_name="keepa_commit")
    assert not ledger.commit(Ops(), None, [grant])
    assert sender.client.hlen(OUTBOX_KEY) == 0 and ledger.unsent() == []
    sender.client.delete(KEYS[0])
    assert ledger.commit(Ops(), None, [grant])
    assert [m.message_id for m in ledger.unsent()] == [grant.message_id]
    ledger.sent([grant.message_id])
    assert ledger.unsent() == []


def test_an_outbox_entry_that_cannot_be_decoded_is_logged_and_dropped_not_a_stuck_take_over(sender, caplog):
    ledger = Ledger(sender.client, holder="me")
    grant = to_governor("wake", {}).copy(queue_name="commit", actor_name="keepa_commit")
    assert ledger.commit(Ops(), None, [grant])
    sender.client.hset(OUTBOX_KEY, "broken-id", b"{not a message")
    assert [m.message_id for m in ledger.unsent()] == [grant.message_id]
    assert "outbox message b'broken-id' cannot be decoded" in caplog.text
    assert sender.client.hkeys(OUTBOX_KEY) == [grant.message_id.encode()]
