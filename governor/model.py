"""The governor's vocabulary: request classes, requests, grants, decisions and explanations."""

from __future__ import annotations

from dataclasses import dataclass, field

UPSERT, COMMIT, PEEK = "upsert", "commit", "peek"
CLASSES = (UPSERT, COMMIT, PEEK)  # priority order, highest first


@dataclass(frozen=True, slots=True)
class Request:
    """A wish to make one Keepa call. ``units`` is pages (upsert) or ASINs (peek, commit); an
    upsert of several pages is that many calls made at once (see ``actors.scan.FeedScan.upsert``).

    ``cost`` overrides the governor's learned estimate (used by comparison policies whose
    tasks reserve whole batches); the governor itself grants by what it learned. ``continues``
    says the actor will most likely ask again in the same class as soon as this call returns (the
    next page of a feed scan): the governor then holds that much back from the other classes for
    a short grace period, so a scan is not stretched over many refills by calls granted between
    its pages.
    """

    id: str
    cls: str
    units: int = 1
    created_ms: int = 0
    cost: int | None = None
    continues: bool = False

    def __post_init__(self):
        if self.cls not in CLASSES:
            raise ValueError(f"request class must be one of {CLASSES}, got {self.cls!r}")
        if self.units < 1:
            raise ValueError(f"request units must be >= 1, got {self.units}")


@dataclass(frozen=True, slots=True)
class Grant:
    """A granted request. ``balance_before`` and ``alone`` (no other call in flight) let the
    settle compare Keepa's numbers with the model's exactly when that comparison is meaningful."""

    request: Request
    estimate: int
    granted_ms: int
    balance_before: float = 0
    alone: bool = False
    refill_due_ms: int = 0
    uncertainty: int = 0

    @property
    def id(self) -> str:
        return self.request.id


@dataclass(frozen=True, slots=True)
class Rejection:
    request: Request
    reason: str


@dataclass(slots=True)
class Decision:
    """What to do now: the calls to run, and when to call ``decide`` again at the latest.

    ``wake_at_ms`` is None when nothing can change without a new message (no pending work, or
    pending work that waits only for a settle).
    """

    grants: list[Grant] = field(default_factory=list)
    wake_at_ms: int | None = None
    rejections: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why one pending request waits, in numbers, and when it should be granted at the current rate."""

    request_id: str
    cls: str
    position: int
    reason: str
    eta_ms: int | None
