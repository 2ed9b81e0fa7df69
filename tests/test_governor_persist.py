"""A governor rebuilt from its persisted state decides exactly as the original would."""

import json

from governor.config import GovernorConfig
from governor.model import CLASSES, Request
from governor.persist import core_to_json, grant_to_json, request_to_json, restore
from governor.policy import Governor
from keepa_api.tokens import Envelope


def roundtrip(gov):
    data = json.loads(json.dumps({
        "core": core_to_json(gov),
        "pending": [request_to_json(r) for c in CLASSES for r in gov.queues[c]],
        "in_flight": [grant_to_json(g) for g in gov.in_flight.values()],
        "done": dict(gov._done),
    }))
    return restore(gov.cfg, data["core"], data["pending"], data["in_flight"], data["done"])


def test_a_restored_governor_makes_the_same_decisions():
    cfg = GovernorConfig()
    gov = Governor(cfg)
    gov.sync(Envelope(0, 40, 60_000, 5), 0)
    for n in range(12):
        gov.request(Request(f"r{n}", CLASSES[n % 3], created_ms=n), n)
    first = gov.decide(10)
    gov.settle(first.grants[0].id, Envelope(11, 30, 59_000, 5, tokens_consumed=5), 11)
    twin = roundtrip(gov)
    for t in (20, 60_000, 120_000, 30 * 60_000, 61 * 60_000):
        a, b = gov.decide(t), twin.decide(t)
        assert [g.id for g in a.grants] == [g.id for g in b.grants]
        assert a.wake_at_ms == b.wake_at_ms
        assert gov.balance == twin.balance


def test_a_restored_governor_still_ignores_repeated_ids():
    gov = Governor()
    gov.sync(Envelope(0, 100, 60_000, 20), 0)
    gov.request(Request("c1", "commit"), 0)
    grant = gov.decide(0).grants[0]
    gov.settle(grant.id, Envelope(1, 84, 59_000, 20, tokens_consumed=16), 1)
    twin = roundtrip(gov)
    twin.request(Request("c1", "commit"), 2)
    assert twin.pending() == 0
    assert twin.settle("c1", Envelope(3, 0, 59_000, 20, tokens_consumed=16), 3) is False
