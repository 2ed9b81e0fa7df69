"""The schema, created and migrated on start: an ordered list of steps, each applied once.

:func:`migrate` runs every step newer than the database's ``schema_version`` in one transaction and
records it, so a crash half-way applies nothing. Several processes may start at once: PostgreSQL
serialises them on a transaction-scoped advisory lock, SQLite on its write lock (``BEGIN
IMMEDIATE``); whoever comes second finds the steps recorded and does nothing. Re-running is harmless.
On a new SQLite file the first connection's switch to WAL can still answer "database is locked" at
once (7-9 of 200 trials in which four processes started together on a new file);
:func:`storage.store.open_store`, which every process uses, tries again.

To change the schema, append a step (never edit an applied one) and update :mod:`storage.models` to
match; ``playhouse.migrate.SchemaMigrator.from_database(db)`` gives the column operations.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import peewee

from keepa_base.errors import StorageError
from storage.db import describe, drop_connection, storage_error, write_transaction
from storage.models import STATES, WATERMARK_ID, Tables, bind_models

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key: "keepamig" as an int64, unlikely to collide with anything else.
_ADVISORY_LOCK_KEY = int.from_bytes(b"keepamig", "big") & 0x7FFF_FFFF_FFFF_FFFF


def _create_tables(db: peewee.Database, t: Tables) -> None:
    db.create_tables([t.LightDeal, t.Deal, t.WatermarkRow], safe=True)


def _seed_watermark(db: peewee.Database, t: Tables) -> None:
    t.WatermarkRow.insert(id=WATERMARK_ID, next_page=0).on_conflict_ignore().execute()


def _mark_moved(db: peewee.Database, t: Tables) -> None:
    """When the watermark's mark last moved, on this system's clock: the watermark's age is measured
    from it, because the deal times in the mark are on Keepa's clock, which the embedded server runs
    faster (an age against our clock came out negative there). A database made before this step
    takes the row's last write as its best guess."""
    if "mark_moved_ms" not in {c.name for c in db.get_columns(t.WatermarkRow._meta.table_name)}:
        db.execute_sql("ALTER TABLE watermark ADD COLUMN mark_moved_ms BIGINT")  # step 1 makes it now
    W = t.WatermarkRow
    W.update(mark_moved_ms=W.updated_ms).where(W.mark_ms.is_null(False), W.mark_moved_ms.is_null()).execute()


_STATE_CHECK = re.compile(r"state\s+IN\s*\([^)]*\)", re.IGNORECASE)


def _screened_state(db: peewee.Database, t: Tables) -> None:
    """Let a light record be ``screened`` (a feed deal set aside on its own numbers, with the reason):
    the state column's CHECK constraint takes the states of :data:`storage.models.STATES`.
    PostgreSQL replaces the constraint; SQLite cannot alter one, so the table is rebuilt the way
    SQLite's documentation describes (new table from the stored definition with the new list, copy,
    drop, rename, indexes again), inside this step's transaction. Columns added by other steps are
    kept, whatever their order."""
    table = t.LightDeal._meta.table_name
    check = f"state IN ({', '.join(repr(s) for s in STATES)})"
    if isinstance(db, peewee.PostgresqlDatabase):
        names = [n for (n,) in db.execute_sql(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c' "
            "AND pg_get_constraintdef(oid) LIKE %s", (table, "%state%")).fetchall()]
        for name in names:
            db.execute_sql(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        db.execute_sql(f"ALTER TABLE {table} ADD CONSTRAINT {table}_state_check CHECK ({check})")
        return
    (create,) = db.execute_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                               (table,)).fetchone()
    if check in create:  # made by this release's step 1 already
        return
    indexes = [sql for (sql,) in db.execute_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,))]
    rebuilt = f"{table}__step4"
    head, _, rest = create.partition("(")
    body, found = _STATE_CHECK.subn(check, rest, count=1)
    if found != 1:  # never record the step without the new constraint: every screened upsert would fail
        raise StorageError(f"schema step 4: table {table} has no state CHECK constraint to widen; "
                           "its definition is not one this project made")
    db.execute_sql(f'CREATE TABLE "{rebuilt}" (' + body)
    db.execute_sql(f'INSERT INTO "{rebuilt}" SELECT * FROM "{table}"')
    db.execute_sql(f'DROP TABLE "{table}"')
    db.execute_sql(f'ALTER TABLE "{rebuilt}" RENAME TO "{table}"')
    for sql in indexes:
        db.execute_sql(sql)
def _product_failures(db: peewee.Database, t: Tables) -> None:
    db.create_tables([t.ProductFailure], safe=True)


Step = tuple[int, str, Callable[[peewee.Database, Tables], None]]

STEPS: list[Step] = [
    (1, "light deals, committed deals and the watermark", _create_tables),
    (2, "the single watermark row", _seed_watermark),
    (3, "when the watermark last moved", _mark_moved),
    (4, "light deals may be screened out on their own numbers", _screened_state),
    (5, "malformed products and those set aside", _product_failures),
]

LATEST = max(version for version, _, _ in STEPS)


def schema_version(db: peewee.Database) -> int:
    """The newest step applied (0 for an empty database)."""
    t = bind_models(db)
    if not db.table_exists(t.SchemaVersion._meta.table_name):
        return 0
    return t.SchemaVersion.select(peewee.fn.MAX(t.SchemaVersion.version)).scalar() or 0


def migrate(db: peewee.Database, steps: list[Step] | None = None) -> int:
    """Apply the pending steps in one transaction; return the schema version now in place."""
    steps = STEPS if steps is None else steps
    t = bind_models(db)
    try:
        with write_transaction(db):
            if isinstance(db, peewee.PostgresqlDatabase):
                db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
            db.create_tables([t.SchemaVersion], safe=True)
            done = {version for (version,) in t.SchemaVersion.select(t.SchemaVersion.version).tuples()}
            applied = []
            for version, name, step in sorted(steps, key=lambda s: s[0]):
                if version in done:
                    continue
                step(db, t)
                t.SchemaVersion.insert(version=version, name=name).execute()
                applied.append(version)
            current = max(done | set(applied), default=0)
    except (peewee.DatabaseError, peewee.InterfaceError) as exc:
        drop_connection(db)
        raise storage_error(db, exc, "creating or migrating the schema") from None
    if applied:
        log.info("migrated %s to schema version %d (steps %s)", describe(db), current, applied)
    else:
        log.debug("%s already at schema version %d", describe(db), current)
    return current
