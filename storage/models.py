"""The tables, as peewee models. Only :mod:`storage` sees them; callers get plain values.

The models here are unbound; :func:`bind_models` makes a set bound to one database, so several
databases (SQLite and PostgreSQL in one test session, say) never share or swap a binding.

    light_deal      one row per ASIN seen in the deal feed, and where it is in the pipeline (a
                    screened-out deal keeps the screen's reason)
    deal            the committed, visible deals (the fields of pipeline.commit.DealRecord)
    watermark       one row (id 1): the feed watermark and the scan cursor
    product_failure one row per ASIN Keepa answered malformed, and whether it is set aside
    schema_version  one row per migration step applied
"""

from __future__ import annotations

from dataclasses import dataclass

import peewee

NEW, PEEKING, REJECTED, VIABLE, COMMITTED = "new", "peeking", "rejected", "viable", "committed"
SCREENED = "screened"           # set aside on the feed deal's own numbers: never peeked (schema step 4)
STATES = (NEW, PEEKING, REJECTED, VIABLE, COMMITTED, SCREENED)
WATERMARK_ID = 1
_STATE_LIST = ", ".join(f"'{state}'" for state in STATES)


class LightDeal(peewee.Model):
    asin = peewee.CharField(max_length=32, primary_key=True)
    deal_time_ms = peewee.BigIntegerField()
    first_seen_ms = peewee.BigIntegerField()
    last_seen_ms = peewee.BigIntegerField()
    state = peewee.CharField(max_length=16, default=NEW,
                             constraints=[peewee.Check(f"state IN ({_STATE_LIST})")])
    reason = peewee.TextField(default="")
    claimed_ms = peewee.BigIntegerField(null=True)

    class Meta:
        table_name = "light_deal"
        indexes = ((("state", "first_seen_ms", "asin"), False),)


class Deal(peewee.Model):
    asin = peewee.CharField(max_length=32, primary_key=True)
    title = peewee.TextField()
    price_new = peewee.BigIntegerField()
    avg90_new = peewee.BigIntegerField()
    drop_percent = peewee.DoubleField()
    sales_rank = peewee.BigIntegerField()
    offers = peewee.IntegerField()
    deal_time_ms = peewee.BigIntegerField()
    committed_ms = peewee.BigIntegerField(index=True)

    class Meta:
        table_name = "deal"


class WatermarkRow(peewee.Model):
    id = peewee.IntegerField(primary_key=True)
    mark_ms = peewee.BigIntegerField(null=True)
    scan_top_ms = peewee.BigIntegerField(null=True)
    next_page = peewee.IntegerField(default=0)
    updated_ms = peewee.BigIntegerField(null=True)
    mark_moved_ms = peewee.BigIntegerField(null=True)   # our clock, when mark_ms last changed

    class Meta:
        table_name = "watermark"


class ProductFailure(peewee.Model):
    """A product Keepa answered malformed: how often, why, and whether it is set aside (no more calls
    until an operator replays it, ``keepa-deals replay-set-aside``)."""

    asin = peewee.CharField(max_length=32, primary_key=True)
    stage = peewee.CharField(max_length=16)            # peek or commit: the call that failed last
    failures = peewee.IntegerField(default=0)
    reason = peewee.TextField(default="")              # the decoder's, of the last failure
    updated_ms = peewee.BigIntegerField()
    set_aside_ms = peewee.BigIntegerField(null=True, index=True)

    class Meta:
        table_name = "product_failure"


class SchemaVersion(peewee.Model):
    version = peewee.IntegerField(primary_key=True)
    name = peewee.TextField()

    class Meta:
        table_name = "schema_version"


@dataclass(frozen=True)
class Tables:
    LightDeal: type[LightDeal]
    Deal: type[Deal]
    WatermarkRow: type[WatermarkRow]
    SchemaVersion: type[SchemaVersion]
    ProductFailure: type[ProductFailure]


def bind_models(db: peewee.Database) -> Tables:
    """Subclasses of every model bound to ``db`` (same table names, fields and indexes)."""
    bound = {}
    for model in (LightDeal, Deal, WatermarkRow, SchemaVersion, ProductFailure):
        meta = type("Meta", (), {"database": db, "table_name": model._meta.table_name})
        bound[model.__name__] = type(model.__name__, (model,), {"Meta": meta, "__module__": __name__})
    return Tables(**bound)
