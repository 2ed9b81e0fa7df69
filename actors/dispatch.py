"""Dramatiq's Redis queues, many operations to a round trip: the governor loop's consumer and producer.

``RedisBroker.enqueue`` and ``Consumer.ack`` each run Dramatiq's dispatch script on their own, so a
governor batch of n requests and n settles that grants n calls paid 3n round trips to Redis (the
profile of ``python -m bench grants`` put them at ~70 % of the governor's time), and Dramatiq's
consumer sleeps inside ``next()`` whenever a fetch comes back empty, which ended every batch with a
nap. Here the same script runs with the same arguments, several calls in one non-transactional
pipeline, and only the loop decides when to sleep. The Redis layout (message hash, queue list,
per-process ack set, delay queue with ``eta``) is exactly what Dramatiq's own workers read and what
its maintenance requeues when a process dies, so every other process is unaffected.

This leans on one thing Dramatiq does not promise: the dispatch script's argument layout.
``setup.cfg`` keeps Dramatiq below 3, and ``tests/test_dispatch.py`` runs this against a real
redis-server and a real Dramatiq worker, so a release that changes it fails there, not in production.
"""

from __future__ import annotations

import logging
import uuid

import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed

from actors.doorbell import BELL_KEY
from actors.doorbell import QUEUE as GOVERNOR_QUEUE

log = logging.getLogger(__name__)

# Sends and acknowledgements in bulk, on Dramatiq's layout: a message is its body in the hash
# ``<ns>:<queue>.msgs`` and its id on the list ``<ns>:<queue>``; a fetched one also sits in the
# fetching process's set ``<ns>:__acks__.<broker id>.<queue>`` until acknowledged. An ack removes the
# body only if the id was still in that set (otherwise maintenance has requeued it: keep it), as
# Dramatiq's own ack does. A message put on the governor's queue also rings its doorbell, in the
# same script (:mod:`actors.doorbell`). The ledger's commit script embeds this function, so the
# governor's write, its grants and its acknowledgements happen in one atomic step.
SEND_AND_ACK_LUA = f"""
local function send_and_ack(at)
  local ns, worker = ARGV[at], ARGV[at + 1]
  local n_send, n_ack = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local i, ring = at + 4, false
  for _ = 1, n_send do
    redis.call('HSET', ns .. ':' .. ARGV[i] .. '.msgs', ARGV[i + 1], ARGV[i + 2])
    redis.call('RPUSH', ns .. ':' .. ARGV[i], ARGV[i + 1])
    ring = ring or ARGV[i] == '{GOVERNOR_QUEUE}'
    i = i + 3
  end
  if ring then
    redis.call('LPUSH', '{BELL_KEY}', '1')
    redis.call('LTRIM', '{BELL_KEY}', 0, 0)
  end
  for _ = 1, n_ack do
    if redis.call('SREM', ns .. ':__acks__.' .. worker .. '.' .. ARGV[i], ARGV[i + 1]) > 0 then
      redis.call('HDEL', ns .. ':' .. ARGV[i] .. '.msgs', ARGV[i + 1])
    end
    i = i + 2
  end
end
"""


class Outbox:
    """Messages made ready to enqueue exactly as ``broker.enqueue`` would (a fresh Redis id, the
    delay queue and ``eta`` for a delay, the enqueue middleware), plus acknowledgements, flattened
    into script arguments. Call :meth:`delivered` once the script has run."""

    def __init__(self, broker: RedisBroker, sends: list[tuple[Message, int | None]], acks: list[tuple[str, Message]]):
        self.broker = broker
        self.sent: list[tuple[Message, int | None]] = []
        flat_sends, flat_acks = [], []
        for message, delay in sends:
            message = message.copy(options={"redis_message_id": str(uuid.uuid4())})
            if delay is not None:
                message = message.copy(queue_name=dq_name(message.queue_name),
                                       options={"eta": current_millis() + delay})
            broker.emit_before("enqueue", message, delay)
            flat_sends += [message.queue_name, message.options["redis_message_id"], message.encode()]
            self.sent.append((message, delay))
        for queue_name, message in acks:
            flat_acks += [queue_name, message.options["redis_message_id"]]
        self.args = [broker.namespace, broker.broker_id, len(self.sent), len(acks), *flat_sends, *flat_acks]
        self.empty = not self.sent and not acks

    def delivered(self) -> list[Message]:
        for message, delay in self.sent:
            self.broker.emit_after("enqueue", message, delay)
        return [message for message, _ in self.sent]


class Dispatch:
    def __init__(self, broker: RedisBroker):
        self.broker = broker
        self._script = broker.scripts["dispatch"]
        self._keys = [broker.namespace]
        self._bulk = broker.client.register_script(SEND_AND_ACK_LUA + "send_and_ack(1)\n")

    def _args(self, command: str, queue_name: str, *args) -> list:
        broker = self.broker
        return [command, current_millis(), queue_name, broker.broker_id, broker.heartbeat_timeout,
                broker.dead_message_ttl, broker._should_do_maintenance(command), broker._max_unpack_size(), *args]

    def _run(self, calls: list[list]) -> list:
        """Run the dispatch script once per argument list, in one pipeline. EVALSHA directly: a
        pipeline given redis-py's Script object asks SCRIPT EXISTS first, a round trip more each time.
        After a Redis restart the script is gone and every call fails alike: load it, run again."""
        for attempt in (1, 2):
            pipe = self.broker.client.pipeline(transaction=False)
            for args in calls:
                pipe.evalsha(self._script.sha, 1, *self._keys, *args)
            try:
                return pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                self.broker.client.script_load(self._script.script)
            except redis.ConnectionError as exc:
                raise ConnectionClosed(exc) from None
        return []

    def fetch(self, wanted: list[tuple[str, int]]) -> list[list[Message]]:
        """Take up to ``n`` messages from each ``(queue, n)``, in one round trip. Each taken message
        sits in this process's ack set until :meth:`send` acknowledges it or :meth:`requeue` hands it
        back (or this process dies and Redis maintenance requeues it)."""
        out = []
        replies = self._run([self._args("fetch", queue_name, n) for queue_name, n in wanted])
        for queue_name, datas in zip((q for q, _ in wanted), replies, strict=True):
            messages = []
            for data in datas:
                if data is None:  # the id was listed but its body is gone (see Dramatiq #266)
                    log.warning("a message listed on %s has no body; skipped", queue_name)
                    continue
                messages.append(Message.decode(data))
            out.append(messages)
        return out

    def send(self, sends: list[tuple[Message, int | None]], acks: list[tuple[str, Message]] = ()) -> list[Message]:
        """Enqueue each ``(message, delay_ms)`` and acknowledge each ``(queue it was fetched from,
        message)``, all in one atomic script call."""
        outbox = self.outbox(sends, acks)
        if not outbox.empty:
            try:
                self._bulk(args=outbox.args)
            except redis.ConnectionError as exc:
                raise ConnectionClosed(exc) from None
        return outbox.delivered()

    def outbox(self, sends: list[tuple[Message, int | None]], acks: list[tuple[str, Message]] = ()) -> Outbox:
        return Outbox(self.broker, sends, acks)

    def requeue(self, queue_name: str, messages: list[Message]) -> None:
        """Hand fetched, unacknowledged messages back to the end of their queue (already acknowledged
        ones are left alone)."""
        ids = [m.options["redis_message_id"] for m in messages]
        if ids:
            self._run([self._args("requeue", queue_name, *ids)])

    def requeue_all(self, queue_name: str) -> int:
        """Hand back everything this process has fetched from ``queue_name`` and not acknowledged,
        known to it or not (a fetch whose reply was lost leaves messages it never saw); how many."""
        ids = self.broker.client.smembers(f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{queue_name}")
        if ids:
            self._run([self._args("requeue", queue_name, *ids)])
        return len(ids)
