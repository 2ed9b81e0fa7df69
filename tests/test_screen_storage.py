"""Screened-out feed deals in the durable store, and schema step 4 that allows them, on SQLite and
on a real PostgreSQL server."""

from __future__ import annotations

import re

import peewee
import pytest

from keepa_base.errors import StorageError
from storage import migrations
from storage.db import open_database
from storage.migrations import STEPS, migrate, schema_version
from storage.store import Store
from tests import test_storage
from tests.test_storage import light

database_url, store = test_storage.database_url, test_storage.store  # the fixtures: SQLite and PostgreSQL

pytestmark = pytest.mark.integration

OLD_STATES = "'new', 'peeking', 'rejected', 'viable', 'committed'"   # the CHECK list before step 4


def a_version_3_database(url: str) -> peewee.Database:
    """A database as the release before the screen left it: steps 1-3, the old state list."""
    db = open_database(url)
    migrate(db, [step for step in STEPS if step[0] <= 3])
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql("ALTER TABLE light_deal DROP CONSTRAINT light_deal_state_check")
        db.execute_sql(f"ALTER TABLE light_deal ADD CONSTRAINT light_deal_state_check CHECK (state IN ({OLD_STATES}))")
    else:
        db.execute_sql("DROP TABLE light_deal")
        db.execute_sql(
            'CREATE TABLE "light_deal" ("asin" VARCHAR(32) NOT NULL PRIMARY KEY, "deal_time_ms" INTEGER NOT NULL, '
            '"first_seen_ms" INTEGER NOT NULL, "last_seen_ms" INTEGER NOT NULL, "state" VARCHAR(16) NOT NULL '
            f'CHECK (state IN ({OLD_STATES})), "reason" TEXT NOT NULL, "claimed_ms" INTEGER)')
        db.execute_sql('CREATE INDEX "lightdeal_state_first_seen_ms_asin" ON "light_deal" '
                       '("state", "first_seen_ms", "asin")')
    db.execute_sql("INSERT INTO light_deal (asin, deal_time_ms, first_seen_ms, last_seen_ms, state, reason) "
                   f"VALUES ('B000000001', 1000, 2000, 3000, 'rejected', {db.param})", ("drop 3.0% below the rule",))
    return db


def light_deal_indexes(db) -> set[str]:
    if isinstance(db, peewee.PostgresqlDatabase):
        sql = "SELECT indexname FROM pg_indexes WHERE tablename = 'light_deal'"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'light_deal' AND sql IS NOT NULL"
    return {name for (name,) in db.execute_sql(sql).fetchall()}


def test_step_4_keeps_every_light_record_and_lets_a_deal_be_screened(database_url):
    db = a_version_3_database(database_url)
    indexes = light_deal_indexes(db)
    assert indexes  # the claim query's index, at least
    with pytest.raises(peewee.IntegrityError), db.atomic():  # the old list refuses the new state
        db.execute_sql("UPDATE light_deal SET state = 'screened' WHERE asin = 'B000000001'")
    assert 4 not in {v for (v,) in db.execute_sql("SELECT version FROM schema_version").fetchall()}

    migrate(db)
    assert schema_version(db) >= 4
    migrated = Store(db)
    row = light(migrated, "B000000001")
    assert (row["state"], row["reason"], row["first_seen_ms"]) == ("rejected", "drop 3.0% below the rule", 2000)
    migrated.upsert_deals([("B000000002", 1_000, "screened: drop 2.0% below the 20.0% rule")], 4_000)
    assert light(migrated, "B000000002")["state"] == "screened"
    with pytest.raises(peewee.IntegrityError), db.atomic():  # the constraint still stands for anything else
        db.execute_sql("UPDATE light_deal SET state = 'lost' WHERE asin = 'B000000001'")
    assert light_deal_indexes(db) == indexes  # every index of the table is back after SQLite's rebuild
    migrated.close()


def test_a_screened_out_deal_is_stored_with_its_reason_and_never_claimed(store):
    reason = "screened: drop 4.0% below the 20.0% rule"
    written = store.upsert_deals([("B000000001", 1_000, reason), ("B000000002", 1_000, None),
                                  ("B000000003", 1_000)], 2_000)
    assert written == 3
    assert (light(store, "B000000001")["state"], light(store, "B000000001")["reason"]) == ("screened", reason)
    assert store.deals_screened_out() == 1 and store.candidates_waiting() == 2
    assert sorted(store.take_candidates(10, 3_000)) == ["B000000002", "B000000003"]
    assert store.take_candidates(10, 4_000) == []
    assert store.deals_by_state()["screened"] == 1 and store.deals_stored() == 3


def test_seeing_a_known_deal_again_keeps_its_state_whatever_the_screen_says(store):
    store.upsert_deals([("B000000001", 1_000, None), ("B000000002", 1_000, "screened: no 90-day average")], 2_000)
    store.upsert_deals([("B000000001", 3_000, "screened: now it fails"), ("B000000002", 3_000, None)], 4_000)
    first, second = light(store, "B000000001"), light(store, "B000000002")
    assert (first["state"], first["reason"], first["deal_time_ms"]) == ("new", "", 3_000)
    assert (second["state"], second["last_seen_ms"]) == ("screened", 4_000)
    assert store.deals_screened_out() == 1


def test_a_screened_deal_is_counted_among_deals_stored_not_among_candidates(store):
    store.upsert_deals([(f"B00000000{i}", 1_000, "screened: x") for i in range(3)], 2_000)
    assert (store.deals_stored(), store.candidates_waiting(), store.deals_screened_out()) == (3, 0, 3)
    with pytest.raises(StorageError):
        store.upsert_deals([(None, 1_000, "screened: x")], 3_000)


def test_step_4_refuses_a_light_deal_table_without_the_state_constraint_and_records_nothing(tmp_path, monkeypatch):
    db = a_version_3_database(f"sqlite:///{tmp_path}/odd.db")
    monkeypatch.setattr(migrations, "_STATE_CHECK", re.compile(r"no such constraint"))
    with pytest.raises(StorageError, match="schema step 4: table light_deal has no state CHECK constraint"):
        migrate(db)
    assert schema_version(db) == 3
    assert db.execute_sql("SELECT asin FROM light_deal").fetchall() == [("B000000001",)]  # nothing lost
