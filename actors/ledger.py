"""The governor's durable state in Redis, and the lease that makes exactly one governor grant.

Keys (prefix ``keepa-deals:governor:``): ``core`` (JSON scalars), ``pending`` and ``inflight``
(hashes: request or grant JSON with its payload), ``done`` (sorted set of finished ids by time, as
many as the policy remembers: ``remember_ms`` back, at most ``remember_done``), ``lease`` (the
leader's id, with a TTL, renewed by the leader every third of it whether or not it writes:
``actors.governor_host.GovernorHost.begin``), ``snapshot`` (the state document for status and metrics),
``grants`` (every grant id in the order granted, the newest ``GRANT_LOG_MAX``, written in the same
script as the grant: the log that shows no request was granted twice), ``outbox`` (a hash: Dramatiq
message id -> encoded message, the grants and rejections written with the state and not yet handed
to Dramatiq: see :mod:`actors.governor_host`).

Every write is one Lua script (``actors/lua/*.lua``) that first checks the lease: a governor that
lost its lease (paused, partitioned, a second one started by mistake) can no longer change anything.
Fencing, not hope. The commit script also takes a lease nobody holds (what :meth:`Ledger.acquire`
would do first), writes the snapshot and puts the batch's messages in the outbox, so a batch's state
and what it must send are written in one round trip, all or nothing.
"""

from __future__ import annotations

import json
import logging
import uuid

import redis
from dramatiq import Message

from actors.lua_scripts import register
from keepa_base.redis_keys import GOVERNOR_PREFIX, SNAPSHOT_KEY

log = logging.getLogger(__name__)

PREFIX = GOVERNOR_PREFIX
KEYS = [PREFIX + k for k in ("lease", "core", "pending", "inflight", "done")]
GRANT_LOG_KEY = PREFIX + "grants"   # every grant id, in grant order: an audit trail (at most GRANT_LOG_MAX)
VERSION_KEY = PREFIX + "version"    # how many times the state was written: the writers' fence
OUTBOX_KEY = PREFIX + "outbox"      # Dramatiq message id -> encoded message, written but not yet sent
GRANT_LOG_MAX = 100_000
LEASE_MS = 30_000


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
        self.version: int | None = None   # the state's version as this writer loaded or last wrote it
        self._commit = register(client, "commit")
        self._acquire = register(client, "acquire")
        self._renew = register(client, "renew_if_held")
        self._release = register(client, "release_if_held")

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

    def commit(self, ops: Ops, snapshot: dict | None = None, outbox: list[Message] = ()) -> bool:
        """Apply ``ops`` (and write ``snapshot``) only if no other process holds the lease and, once
        this writer has loaded the state, nobody else has written it since; renew the lease; in the
        same atomic step put ``outbox`` (messages to send, by Dramatiq message id) in the outbox.
        False: nothing happened."""
        doc = json.dumps(snapshot, separators=(",", ":")) if snapshot is not None else ""
        expected = "" if self.version is None else self.version
        args = [self.holder, ops.to_json(), self.lease_ms, doc, GRANT_LOG_MAX, expected]
        for message in outbox:
            args += [message.message_id, message.encode()]
        written = bool(self._commit(keys=[*KEYS, SNAPSHOT_KEY, GRANT_LOG_KEY, OUTBOX_KEY, VERSION_KEY], args=args))
        if written and self.version is not None:
            self.version += 1
        return written

    def unsent(self) -> list[Message]:
        """The messages written to the outbox and not yet marked sent (a governor stopped between
        its write and its sends), each with the Dramatiq message id it was written with. One that
        cannot be decoded (written by hand, or by a release with another message format) would
        stop every take-over: it is logged with its id and removed instead."""
        messages, broken = [], []
        for message_id, raw in self.redis.hgetall(OUTBOX_KEY).items():
            try:
                messages.append(Message.decode(raw))
            except Exception as exc:  # Dramatiq raises DecodeError, or whatever its decoder raised
                log.error("outbox message %s cannot be decoded (%s); dropped: %.200r", message_id, exc, raw)
                broken.append(message_id)
        if broken:
            self.redis.hdel(OUTBOX_KEY, *broken)
        return messages

    def sent(self, message_ids: list[str]) -> None:
        """Take messages Dramatiq has accepted out of the outbox (one round trip). Not fenced: a
        message taken out late was sent, and one sent twice is dropped by its receiver's claim."""
        if message_ids:
            self.redis.hdel(OUTBOX_KEY, *message_ids)

    def load(self) -> tuple[dict | None, list[dict], list[dict], dict[str, int]]:
        pipe = self.redis.pipeline()
        pipe.get(KEYS[1])
        pipe.hvals(KEYS[2])
        pipe.hvals(KEYS[3])
        pipe.zrange(KEYS[4], 0, -1, withscores=True)
        pipe.get(VERSION_KEY)
        core, pending, inflight, done, version = pipe.execute()
        self.version = int(version or 0)   # this writer's fence: a commit after another's write is refused
        pending = sorted((json.loads(v) for v in pending), key=lambda d: d["seq"])
        inflight = [json.loads(v) for v in inflight]
        return (json.loads(core) if core else None, pending, inflight,
                {k.decode(): int(score) for k, score in done})

    def write_snapshot(self, snapshot: dict) -> None:
        self.redis.set(SNAPSHOT_KEY, json.dumps(snapshot, separators=(",", ":")))

    def read_snapshot(self) -> dict | None:
        raw = self.redis.get(SNAPSHOT_KEY)
        return json.loads(raw) if raw else None
