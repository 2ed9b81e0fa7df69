"""Each grant is paid for at most once: a worker claims the grant id in Redis before calling Keepa.

A grant can reach a worker more than once: Dramatiq redelivers a message whose worker died, retries
one whose actor raised (a database write that failed after the call), and the governor sends a
grant again that nobody is running. The claim (key ``keepa-deals:grant:<id>``, one JSON value, set
only if absent) says what became of the call:

    calling    the call is being made by ``owner`` (one attempt: its process and a random tail)
    answered   the call returned; ``answer`` holds what was paid for, to be stored and settled
    done       stored and settled: a later copy of the grant does nothing
    released   the call's outcome was unknown (its attempt died mid-call): settled without an
               envelope and asked for again under a new id, never repeated under this one

Every attempt under way beats in ``keepa-deals:grant-attempts`` (a sorted set, attempt -> last beat
in ms; a thread of its process beats every ``ATTEMPT_BEAT_MS``), so a copy that finds ``calling``
or ``answered`` can tell a slow attempt (a fresh beat: leave it alone) from one that is gone: its
process died, or it raised and nothing will retry it (a lost connection can leave its message
unacknowledged with a live worker, where Dramatiq never redelivers it). A gone attempt's claim is
taken over once (compare and set). Calls made again for one grant anyway are counted in
``keepa-deals:calls:repeated_total`` (:meth:`GrantClaims.count_repeated`), exported as
``keepa_calls_repeated_total``.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass

from actors.lua_scripts import register
from keepa_base.redis_keys import REPEATED_KEY

log = logging.getLogger(__name__)

CLAIM_PREFIX = "keepa-deals:grant:"
ATTEMPTS_KEY = "keepa-deals:grant-attempts"
CLAIM_TTL_MS = 3_600_000   # longer than Dramatiq's retries of one message (5 retries: ~8 minutes)
ATTEMPT_BEAT_MS = 5_000
ATTEMPT_TIMEOUT_MS = 15_000   # three beats missed: gone (Dramatiq's heartbeat timeout, actors/broker.py)
CALLING, ANSWERED, DONE, RELEASED = "calling", "answered", "done", "released"
CALL, STORE, SKIP = "call", "store", "skip"

@dataclass(frozen=True)
class Claim:
    state: str
    owner: str
    since_ms: int
    answer: dict | None = None

    @classmethod
    def decode(cls, raw: bytes) -> Claim:
        doc = json.loads(raw)
        return cls(doc["state"], doc["owner"], int(doc["since_ms"]), doc.get("answer"))

    @property
    def process(self) -> str:
        return self.owner.partition("/")[0]

    @property
    def open(self) -> bool:
        """Not finished: an attempt holds it, or held it until it died."""
        return self.state in (CALLING, ANSWERED)


@dataclass(frozen=True)
class Begun:
    """What :meth:`GrantClaims.begin` decided. ``action``: ``call`` Keepa (``repeat``: an attempt
    before this one may have called, its outcome unknown), ``store`` the answer a gone attempt paid
    for (``previous.answer``), or ``skip`` (settled already, released, or a live attempt is on it).
    ``token`` names this attempt; ``previous`` is the claim found, if any."""

    action: str
    token: str
    repeat: bool = False
    previous: Claim | None = None


class GrantClaims:
    def __init__(self, client, clock_ms, process: str | None = None):
        self.redis, self.clock_ms = client, clock_ms
        self.process = process or uuid.uuid4().hex   # names this process's attempts (one per Steps)
        self._running: set[str] = set()   # this process's attempts under way
        self._lock = threading.Lock()
        self._beater: threading.Thread | None = None
        self._begin = register(client, "claim_begin")
        self._swap = register(client, "claim_swap")
        self._owned_set = register(client, "claim_owned_set")

    def _doc(self, state: str, owner: str, answer: dict | None = None) -> str:
        doc = {"state": state, "owner": owner, "since_ms": self.clock_ms()}
        if answer is not None:
            doc["answer"] = answer
        return json.dumps(doc, separators=(",", ":"))

    def begin(self, grant_id: str) -> Begun:
        """Claim the grant for a call, or say why not (see the module's table)."""
        token = f"{self.process}/{uuid.uuid4().hex[:12]}"
        keys = [CLAIM_PREFIX + grant_id, ATTEMPTS_KEY]
        claim = None
        for _ in range(8):  # each pass lost a race to another copy; a few are plenty
            found = self._begin(keys=keys, args=[self._doc(CALLING, token), CLAIM_TTL_MS, token, self.clock_ms()])
            if found is None:
                self._started(token)
                return Begun(CALL, token)
            claim = Claim.decode(found)
            if not claim.open or self.owner_alive(claim):
                return Begun(SKIP, token, previous=claim)
            taken = self._swap(keys=keys, args=[found, self._doc(claim.state, token, claim.answer), CLAIM_TTL_MS,
                                                token, self.clock_ms()])
            if taken:
                self._started(token)
                return Begun(CALL if claim.state == CALLING else STORE, token, repeat=True, previous=claim)
        return Begun(SKIP, token, previous=claim)

    def owner_alive(self, claim: Claim) -> bool:
        """The claim's attempt is still under way: in this process, one not yet ended; in another,
        one whose beat is fresh."""
        if claim.process == self.process:
            with self._lock:
                return claim.owner in self._running
        return attempt_alive(self.redis, claim.owner, self.clock_ms())

    def answered(self, grant_id: str, token: str, answer: dict) -> bool:
        """Keep the paid-for answer before anything else can fail; False if this attempt no longer
        holds the claim. That happens when its beat went stale during the call (Redis away for
        longer than ``ATTEMPT_TIMEOUT_MS``) and a copy took the grant over and released it: the work
        was then asked for again under a new id, so this call is one of two paid for the same work,
        and it is counted as repeated."""
        if self._put_owned(grant_id, token, self._doc(ANSWERED, token, answer)):
            return True
        log.warning("grant %s: the claim was taken over while this attempt called Keepa; its answer is "
                    "stored, and the call counted as repeated", grant_id)
        self.count_repeated(1)
        return False

    def finish(self, grant_id: str, token: str, state: str = DONE) -> bool:
        """Mark the claim ``state`` if this attempt still holds it (a claim another copy released stays
        released); the attempt is over either way."""
        try:
            return self._put_owned(grant_id, token, self._doc(state, token))
        finally:  # written or not, the attempt is over
            self.ended(token)

    def _put_owned(self, grant_id: str, token: str, doc: str) -> bool:
        return bool(self._owned_set(keys=[CLAIM_PREFIX + grant_id], args=[token, doc, CLAIM_TTL_MS]))

    def ended(self, token: str) -> None:
        """This attempt is over (returned or raised): it beats no more, so a later copy may judge its
        claim (at once if Redis hears of it now, else once its last beat is stale)."""
        with self._lock:
            self._running.discard(token)
        try:
            self.redis.zrem(ATTEMPTS_KEY, token)
        except Exception as exc:  # Redis gone: the beat goes stale by itself
            log.debug("could not end attempt %s now (%s); its beat goes stale", token, exc)

    def count_repeated(self, calls: int) -> None:
        if calls > 0:
            self.redis.incrby(REPEATED_KEY, calls)

    # -- the beat ---------------------------------------------------------------------------------
    def _started(self, token: str) -> None:
        with self._lock:
            self._running.add(token)
            if self._beater is None:
                self._beater = threading.Thread(target=self._beat, name="grant-attempt-beat", daemon=True)
                self._beater.start()

    def _beat(self) -> None:
        """Beat for every attempt under way in this process; end when there is none."""
        wake = threading.Event()
        while True:
            with self._lock:
                tokens = list(self._running)
                if not tokens:
                    self._beater = None
                    return
            try:
                self.beat_once(tokens)
            except Exception as exc:  # Redis gone for a while: beat again next time
                log.debug("could not beat for %d attempts: %s", len(tokens), exc)
            wake.wait(ATTEMPT_BEAT_MS / 1000)

    def beat_once(self, tokens: list[str]) -> None:
        """Refresh the beats of ``tokens``, read a moment ago. Only beats still present are refreshed
        (``ZADD XX``): an attempt that ended since the read (its beat removed) stays ended, where a
        plain ``ZADD`` would bring it back to life for ``ATTEMPT_TIMEOUT_MS`` and make the retry of
        its grant skip as if a live attempt held it."""
        now = self.clock_ms()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(ATTEMPTS_KEY, dict.fromkeys(tokens, now), xx=True)
        pipe.zremrangebyscore(ATTEMPTS_KEY, 0, now - CLAIM_TTL_MS)  # dead processes' leftovers
        pipe.execute()


def attempt_alive(client, token: str, now_ms: int) -> bool:
    beat = client.zscore(ATTEMPTS_KEY, token)
    return beat is not None and now_ms - beat < ATTEMPT_TIMEOUT_MS


def read_claims(client, grant_ids: list[str]) -> dict[str, Claim | None]:
    """The claims of ``grant_ids`` (None where a grant was never claimed), in one round trip."""
    if not grant_ids:
        return {}
    raws = client.mget([CLAIM_PREFIX + gid for gid in grant_ids])
    return {gid: Claim.decode(raw) if raw else None for gid, raw in zip(grant_ids, raws, strict=True)}


def calls_repeated(client) -> int:
    raw = client.get(REPEATED_KEY)
    return int(raw) if raw else 0
