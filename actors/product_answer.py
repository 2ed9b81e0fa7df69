"""What a peek or commit keeps of a paid-for /product answer: small enough to hold in the grant's
claim (:mod:`actors.grant_claims`) until it is stored, so a retry stores it instead of buying it again.

Per good product: its ASIN, title, the three numbers the peek verdict reads and the offer count (what
:func:`pipeline.commit.commit_record` needs); per malformed product: its ASIN and the decoder's
reason; and the token envelope the governor settles with.
"""

from __future__ import annotations

from dataclasses import dataclass

from keepa_api.tokens import Envelope
from pipeline.verdict import NO_DATA, PeekStats

NEW, SALES_RANK = 1, 3


@dataclass(frozen=True)
class AnsweredProduct:
    asin: str
    title: str
    stats: PeekStats | None
    offers: int


@dataclass(frozen=True)
class ProductAnswer:
    envelope: Envelope
    products: tuple[AnsweredProduct, ...]
    failed: tuple[tuple[str | None, str], ...] = ()

    @classmethod
    def from_batch(cls, batch) -> ProductAnswer:
        """From a :class:`keepa_api.records.ProductBatch`."""
        return cls(batch.envelope,
                   tuple(AnsweredProduct(p.asin, p.title or "", peek_stats(p), len(p.offers or ()))
                         for p in batch.products),
                   tuple(getattr(batch, "failed", ())))

    def to_json(self) -> dict:
        return {"envelope": self.envelope.to_json(),
                "products": [[p.asin, p.title, None if p.stats is None else
                              [p.stats.price_new, p.stats.avg90_new, p.stats.sales_rank], p.offers]
                             for p in self.products],
                "failed": [list(f) for f in self.failed]}

    @classmethod
    def from_json(cls, doc: dict) -> ProductAnswer:
        return cls(Envelope.from_json(doc["envelope"]),
                   tuple(AnsweredProduct(asin, title, None if stats is None else PeekStats(*stats), offers)
                         for asin, title, stats, offers in doc["products"]),
                   tuple((asin, reason) for asin, reason in doc["failed"]))


def peek_stats(product) -> PeekStats | None:
    stats = product.stats if product is not None else None
    if stats is None:
        return None

    def at(values, index):
        return values[index] if len(values) > index else NO_DATA

    return PeekStats(price_new=at(stats.current, NEW), avg90_new=at(stats.avg90, NEW),
                     sales_rank=at(stats.current, SALES_RANK))
