"""A grant's claim is written only by the attempt that holds it (real Redis)."""

from __future__ import annotations

from actors.grant_claims import (
    ANSWERED,
    ATTEMPT_TIMEOUT_MS,
    ATTEMPTS_KEY,
    CALL,
    CLAIM_PREFIX,
    DONE,
    RELEASED,
    STORE,
    GrantClaims,
    calls_repeated,
)
from tests import test_steps

redis_db = test_steps.redis_db  # a Redis database of its own

NOW = 1_700_000_000_000


def claim_state(client, grant_id: str) -> tuple[str, str]:
    from actors.grant_claims import Claim

    claim = Claim.decode(client.get(CLAIM_PREFIX + grant_id))
    return claim.state, claim.owner


def test_an_attempt_whose_claim_was_taken_over_and_released_cannot_overwrite_it_and_its_call_counts_as_repeated(
        redis_db):
    first = GrantClaims(redis_db, lambda: NOW, process="process-a")
    begun = first.begin("peek:g:0")
    assert begun.action == CALL
    # while the first attempt called Keepa its beat went stale (Redis away): a copy in another process
    # judged it gone, took the claim over and released it, as product_calls does
    later = NOW + ATTEMPT_TIMEOUT_MS + 1
    other = GrantClaims(redis_db, lambda: later, process="process-b")
    copy = other.begin("peek:g:0")
    assert copy.action == CALL and copy.repeat
    assert other.finish("peek:g:0", copy.token, RELEASED) is True
    assert claim_state(redis_db, "peek:g:0") == (RELEASED, copy.token)

    assert first.answered("peek:g:0", begun.token, {"products": []}) is False
    assert first.finish("peek:g:0", begun.token) is False
    assert claim_state(redis_db, "peek:g:0") == (RELEASED, copy.token)
    assert calls_repeated(redis_db) == 1


def test_the_attempt_holding_the_claim_writes_its_answer_and_finishes_it(redis_db):
    claims = GrantClaims(redis_db, lambda: NOW, process="process-a")
    begun = claims.begin("commit:g:0")
    assert claims.answered("commit:g:0", begun.token, {"products": []}) is True
    assert claim_state(redis_db, "commit:g:0") == (ANSWERED, begun.token)
    assert claims.finish("commit:g:0", begun.token) is True
    assert claim_state(redis_db, "commit:g:0") == (DONE, begun.token)
    assert calls_repeated(redis_db) == 0


def test_a_beat_read_before_an_attempt_ended_does_not_bring_it_back_to_life(redis_db):
    """The beat thread reads the attempts under way, then writes their beats; an attempt that raised
    in between (a database write failed after the call) must stay ended, or the retry of its grant
    would find a fresh beat, take it for a live attempt and skip storing the paid-for answer."""
    claims = GrantClaims(redis_db, lambda: NOW, process="process-a")
    begun = claims.begin("commit:g:0")
    assert claims.answered("commit:g:0", begun.token, {"products": []})
    read_by_the_beat = [begun.token]
    claims.ended(begun.token)                   # the attempt raised: it is over
    claims.beat_once(read_by_the_beat)          # the beat that read it a moment before writes now
    assert redis_db.zscore(ATTEMPTS_KEY, begun.token) is None

    retry = GrantClaims(redis_db, lambda: NOW + 1, process="process-b").begin("commit:g:0")
    assert retry.action == STORE and retry.previous.answer == {"products": []}
