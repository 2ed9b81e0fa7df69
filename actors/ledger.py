"""The governor's durable state in Redis, and the lease that makes exactly one governor grant.

Keys (prefix ``keepa-deals:governor:``): ``core`` (JSON scalars), ``pending`` and ``inflight``
(hashes: request or grant JSON with its payload), ``done`` (sorted set of finished ids by time, as
many as the policy remembers: ``remember_ms`` back, at most ``remember_done``), ``lease`` (the
leader's id, with a TTL, renewed by the leader every third of it whether or not it writes:
``actors.governor_actor.GovernorHost.begin``), ``snapshot`` (the state document for status and metrics),
``grants`` (every grant id in the order granted, the newest ``GRANT_LOG_MAX``, written in the same
script as the grant: the log that shows no request was granted twice).

Every write is one Lua script that first checks the lease: a governor that lost its lease (paused,
partitioned, a second one started by mistake) can no longer change anything. Fencing, not hope.
The commit script also takes a lease nobody holds (what :meth:`Ledger.acquire` would do first),
writes the snapshot, and enqueues the grants and acknowledges the applied messages it is given
(:class:`actors.dispatch.Outbox`), so a batch costs one round trip to Redis here, all or nothing.
"""

from __future__ import annotations

import json
import uuid

import redis

from actors.dispatch import SEND_AND_ACK_LUA, Outbox
from keepa_base.redis_keys import SNAPSHOT_KEY

PREFIX = "keepa-deals:governor:"
KEYS = [PREFIX + k for k in ("lease", "core", "pending", "inflight", "done")]
GRANT_LOG_KEY = PREFIX + "grants"   # every grant id, in grant order: an audit trail (at most GRANT_LOG_MAX)
GRANT_LOG_MAX = 100_000
LEASE_MS = 30_000

_COMMIT = SEND_AND_ACK_LUA + f"local GRANT_LOG_MAX = {GRANT_LOG_MAX}\n" + """
local holder = redis.call('GET', KEYS[1])
if holder ~= false and holder ~= ARGV[1] then return 0 end
local ops = cjson.decode(ARGV[2])
if ops.core then redis.call('SET', KEYS[2], ops.core) end
for _, kv in ipairs(ops.pending_add) do redis.call('HSET', KEYS[3], kv[1], kv[2]) end
for _, k in ipairs(ops.pending_del) do redis.call('HDEL', KEYS[3], k) end
for _, kv in ipairs(ops.inflight_add) do
  redis.call('HSET', KEYS[4], kv[1], kv[2])
  redis.call('RPUSH', KEYS[7], kv[1])
end
if #ops.inflight_add > 0 then redis.call('LTRIM', KEYS[7], -GRANT_LOG_MAX, -1) end
for _, k in ipairs(ops.inflight_del) do redis.call('HDEL', KEYS[4], k) end
for _, kv in ipairs(ops.done_add) do redis.call('ZADD', KEYS[5], kv[2], kv[1]) end
if ops.done_before then redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ops.done_before) end
if ops.done_keep then redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -(ops.done_keep + 1)) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[6], ARGV[4]) end
if #ARGV > 4 then send_and_ack(5) end
return 1
"""

_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# a key held by ARGV[1]: renewed for ARGV[2] ms, or deleted; 0 if someone else holds it (also used by
# keepa_deals.running_stack for the `up` marker)
RENEW_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

RELEASE_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Ops:
    """What one message changed, written in one fenced script call."""

    def __init__(self):
        self.core: str | None = None
        self.pending_add: list = []
        self.pending_del: list = []
        self.inflight_add: list = []
        self.inflight_del: list = []
        self.done_add: list = []
        self.done_before: int | None = None
        self.done_keep: int | None = None     # keep at most this many finished ids, the newest

    def to_json(self) -> str:
        data = {k: v for k, v in vars(self).items() if v is not None}
        if self.pending_add and self.pending_del:  # asked and granted in one batch: never written
            gone = set(self.pending_del)
            added = {rid for rid, _ in self.pending_add}
            data["pending_add"] = [kv for kv in self.pending_add if kv[0] not in gone]
            data["pending_del"] = [rid for rid in self.pending_del if rid not in added]
        for key in ("pending_add", "pending_del", "inflight_add", "inflight_del", "done_add"):
            if not data[key]:
                data[key] = {}  # cjson encodes an empty Lua table as an object: keep it iterable
        return json.dumps(data, separators=(",", ":"))


class Ledger:
    def __init__(self, client: redis.Redis, lease_ms: int = LEASE_MS, holder: str | None = None):
        self.redis = client
        self.lease_ms = lease_ms
        self.holder = holder or uuid.uuid4().hex
        self._commit = client.register_script(_COMMIT)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(RENEW_IF_HELD)
        self._release = client.register_script(RELEASE_IF_HELD)

    def acquire(self) -> bool:
        """Take or renew the lease; False while another governor holds it."""
        return bool(self._acquire(keys=[KEYS[0]], args=[self.holder, self.lease_ms]))

    def renew(self) -> bool:
        """Extend the lease only if this process still holds it. False: it ran out or passed on, so
        another governor may have written since; the caller must reload before writing again (the
        fenced commit would take a lease nobody holds, on state that may be stale)."""
        return bool(self._renew(keys=[KEYS[0]], args=[self.holder, self.lease_ms]))

    def release(self) -> bool:
        """Give the lease up if this process holds it (a clean stop): a governor started next takes
        over at once instead of standing by until the lease runs out."""
        return bool(self._release(keys=[KEYS[0]], args=[self.holder]))

    def leader(self) -> str | None:
        value = self.redis.get(KEYS[0])
        return value.decode() if value else None

    def commit(self, ops: Ops, snapshot: dict | None = None, outbox: Outbox | None = None) -> bool:
        """Apply ``ops`` (and write ``snapshot``) only if no other process holds the lease; renew it;
        in the same atomic step send and acknowledge what ``outbox`` holds. False: nothing happened."""
        doc = json.dumps(snapshot, separators=(",", ":")) if snapshot is not None else ""
        args = [self.holder, ops.to_json(), self.lease_ms, doc, *(outbox.args if outbox else ())]
        return bool(self._commit(keys=[*KEYS, SNAPSHOT_KEY, GRANT_LOG_KEY], args=args))

    def load(self) -> tuple[dict | None, list[dict], list[dict], dict[str, int]]:
        pipe = self.redis.pipeline()
        pipe.get(KEYS[1])
        pipe.hvals(KEYS[2])
        pipe.hvals(KEYS[3])
        pipe.zrange(KEYS[4], 0, -1, withscores=True)
        core, pending, inflight, done = pipe.execute()
        pending = sorted((json.loads(v) for v in pending), key=lambda d: d["seq"])
        inflight = [json.loads(v) for v in inflight]
        return (json.loads(core) if core else None, pending, inflight,
                {k.decode(): int(score) for k, score in done})

    def write_snapshot(self, snapshot: dict) -> None:
        self.redis.set(SNAPSHOT_KEY, json.dumps(snapshot, separators=(",", ":")))

    def read_snapshot(self) -> dict | None:
        raw = self.redis.get(SNAPSHOT_KEY)
        return json.loads(raw) if raw else None
