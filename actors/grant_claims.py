"""Each grant is paid for at most once: a worker claims the grant id in Redis before calling Keepa.

A grant can reach a worker more than once: Dramatiq redelivers a message whose worker died, retries
one whose actor raised (a database write that failed after the call), and the governor sends a
grant again when it never started. The claim (key ``keepa-deals:grant:<id>``, one JSON value, set
only if absent) says what became of the call:

    calling    the call is being made by ``owner`` (a process's Dramatiq broker id and one attempt)
    answered   the call returned; ``answer`` holds what was paid for, to be stored and settled
    done       stored and settled: a later copy of the grant does nothing
    released   the call's outcome was unknown (its worker died mid-call): settled without an
               envelope and asked for again under a new id, never repeated under this one

A copy that finds ``calling`` looks at the owner: a live process (its Dramatiq heartbeat is fresh)
is a slow worker, so the copy leaves it alone; a dead one (or an attempt of this very process that
ended with an exception) left the outcome unknown, and the copy takes the claim over, once (compare
and set). Calls made again for one grant anyway are counted in ``keepa-deals:calls:repeated_total``
(:meth:`GrantClaims.count_repeated`), exported as ``keepa_calls_repeated_total``.

Liveness is Dramatiq's own: every command a worker process sends to Redis refreshes its score in
``<namespace>:__heartbeats__``, and its consumers fetch every ~100 ms while any queue has room.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass

CLAIM_PREFIX = "keepa-deals:grant:"
REPEATED_KEY = "keepa-deals:calls:repeated_total"
CLAIM_TTL_MS = 3_600_000   # longer than Dramatiq's retries of one message (5 retries: ~8 minutes)
CALLING, ANSWERED, DONE, RELEASED = "calling", "answered", "done", "released"

_BEGIN = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

_SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


@dataclass(frozen=True)
class Claim:
    state: str
    owner: str
    since_ms: int
    answer: dict | None = None
    raw: bytes = b""

    @classmethod
    def decode(cls, raw: bytes) -> Claim:
        doc = json.loads(raw)
        return cls(doc["state"], doc["owner"], int(doc["since_ms"]), doc.get("answer"), raw)

    @property
    def process(self) -> str:
        return self.owner.partition("/")[0]


CALL, STORE, SKIP = "call", "store", "skip"


@dataclass(frozen=True)
class Begun:
    """What :meth:`GrantClaims.begin` decided. ``action``: ``call`` Keepa (``repeat``: a copy of
    this grant may have called already, its outcome unknown), ``store`` the answer a dead or ended
    copy paid for (``previous.answer``), or ``skip`` (settled already, released, or a live copy is
    on it). ``token`` is this attempt's; ``previous`` the claim found, if any."""

    action: str
    token: str
    repeat: bool = False
    previous: Claim | None = None


class GrantClaims:
    def __init__(self, client, broker, clock_ms):
        self.redis, self.clock_ms = client, clock_ms
        self.process = getattr(broker, "broker_id", None) or uuid.uuid4().hex
        self.heartbeats = f"{getattr(broker, 'namespace', 'dramatiq')}:__heartbeats__"
        self.heartbeat_timeout_ms = int(getattr(broker, "heartbeat_timeout", 15_000))
        self._running: set[str] = set()   # this process's attempts still under way
        self._lock = threading.Lock()
        self._begin = client.register_script(_BEGIN)
        self._swap = client.register_script(_SWAP)

    def _doc(self, state: str, owner: str, answer: dict | None = None) -> str:
        doc = {"state": state, "owner": owner, "since_ms": self.clock_ms()}
        if answer is not None:
            doc["answer"] = answer
        return json.dumps(doc, separators=(",", ":"))

    def begin(self, grant_id: str) -> Begun:
        """Claim the grant for a call, or say why not (see the module's table)."""
        token = f"{self.process}/{uuid.uuid4().hex[:12]}"
        key = CLAIM_PREFIX + grant_id
        for _ in range(8):  # each pass loses a race to another copy; a few are plenty
            found = self._begin(keys=[key], args=[self._doc(CALLING, token), CLAIM_TTL_MS])
            if found is None:
                self._started(token)
                return Begun(CALL, token)
            claim = Claim.decode(found)
            if claim.state not in (CALLING, ANSWERED) or self.owner_alive(claim):
                return Begun(SKIP, token, previous=claim)
            if self._swap(keys=[key], args=[found, self._doc(claim.state, token, claim.answer), CLAIM_TTL_MS]):
                self._started(token)
                return Begun(CALL if claim.state == CALLING else STORE, token, repeat=True, previous=claim)
        return Begun(SKIP, token, previous=claim)

    def _started(self, token: str) -> None:
        with self._lock:
            self._running.add(token)

    def ended(self, token: str) -> None:
        """This attempt is over (returned or raised): a later copy may judge its claim."""
        with self._lock:
            self._running.discard(token)

    def owner_alive(self, claim: Claim) -> bool:
        """The claim's attempt is still under way: in this process, an attempt not yet ended; in
        another, a process whose Dramatiq heartbeat is fresh."""
        if claim.process == self.process:
            with self._lock:
                return claim.owner in self._running
        return process_alive(self.redis, self.heartbeats, claim.process, self.clock_ms(), self.heartbeat_timeout_ms)

    def answered(self, grant_id: str, token: str, answer: dict) -> None:
        """Keep the paid-for answer before anything else can fail."""
        self.redis.set(CLAIM_PREFIX + grant_id, self._doc(ANSWERED, token, answer), px=CLAIM_TTL_MS)

    def finish(self, grant_id: str, token: str, state: str = DONE) -> None:
        self.redis.set(CLAIM_PREFIX + grant_id, self._doc(state, token), px=CLAIM_TTL_MS)
        self.ended(token)

    def count_repeated(self, calls: int) -> None:
        if calls > 0:
            self.redis.incrby(REPEATED_KEY, calls)


def process_alive(client, heartbeats_key: str, process: str, now_ms: int, timeout_ms: int) -> bool:
    beat = client.zscore(heartbeats_key, process)
    return beat is not None and now_ms - beat < timeout_ms


def read_claims(client, grant_ids: list[str]) -> dict[str, Claim | None]:
    """The claims of ``grant_ids`` (None where a grant was never claimed), in one round trip."""
    if not grant_ids:
        return {}
    raws = client.mget([CLAIM_PREFIX + gid for gid in grant_ids])
    return {gid: Claim.decode(raw) if raw else None for gid, raw in zip(grant_ids, raws, strict=True)}


def calls_repeated(client) -> int:
    raw = client.get(REPEATED_KEY)
    return int(raw) if raw else 0
