"""Storage configuration and failures: bad URLs, SQLite pragmas and locks, PostgreSQL going away."""

from __future__ import annotations

import sqlite3
import time

import peewee
import pytest

from keepa_base.errors import ConfigError, DatabaseUnavailable
from pipeline.commit import DealRecord
from pipeline.watermark import Watermark
from storage.db import as_peewee_error, open_database
from storage.migrations import migrate
from storage.models import bind_models
from storage.store import Store, open_store
from tests.services import free_port

pytestmark = pytest.mark.integration


def committed(asin: str) -> DealRecord:
    return DealRecord(asin=asin, title="Kettle", price_new=1999, avg90_new=2999, drop_percent=33.34,
                      sales_rank=1200, offers=4, deal_time_ms=1_000, committed_ms=5_000)


@pytest.mark.parametrize("url", [
    "", "mysql://u:hunter2secret@db/x", "sqlite://host/deals.db", "sqlite:///", "sqlite:///folder/",
    "postgresql://u:hunter2secret@/deals", "postgresql://u:hunter2secret@db:notaport/deals",
    "postgresql://u:hunter2secret@db:5432/", "deals.db",
])
def test_a_bad_database_url_fails_with_a_sentence_naming_the_variable(url):
    with pytest.raises(ConfigError, match="DATABASE_URL") as caught:
        open_store(url)
    assert "hunter2secret" not in str(caught.value)


def test_the_default_relative_sqlite_url_creates_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opened = open_store("sqlite:///var/keepa-deals.db")
    opened.upsert_deal("B000000001", 1_000, 2_000)
    opened.close()
    assert (tmp_path / "var" / "keepa-deals.db").is_file()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    opened = open_store(f"sqlite:///{tmp_path}/deals.db")
    pragma = {name: opened.db.execute_sql(f"PRAGMA {name}").fetchone()[0]
              for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")}
    assert pragma == {"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1, "synchronous": 1}
    opened.close()
    outsider = sqlite3.connect(tmp_path / "deals.db")
    assert outsider.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    outsider.close()


def test_a_locked_sqlite_file_waits_the_busy_timeout_then_is_unavailable_and_loses_nothing(tmp_path):
    opened = open_store(f"sqlite:///{tmp_path}/deals.db", busy_timeout_ms=300)
    opened.upsert_deal("B000000001", 1_000, 2_000)
    holder = sqlite3.connect(tmp_path / "deals.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="SQLite file .*deals.db is unavailable"):
            opened.upsert_deal("B000000002", 1_000, 3_000)
        assert time.monotonic() - started >= 0.25
        assert opened.deals_stored() == 1  # WAL: readers are not blocked by the writer
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert opened.upsert_deal("B000000002", 1_000, 3_000) is True
    assert opened.deals_stored() == 2
    opened.close()


def test_an_unusable_sqlite_path_is_reported_clearly(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(DatabaseUnavailable, match=r"cannot create the folder .*a-file/sub.* DATABASE_URL"):
        open_store(f"sqlite:///{tmp_path}/a-file/sub/deals.db")


def test_an_unreachable_postgres_server_is_reported_without_the_password():
    url = f"postgresql://keepa:hunter2secret@127.0.0.1:{free_port()}/deals"
    with pytest.raises(DatabaseUnavailable, match="PostgreSQL database 'deals' at 127.0.0.1") as caught:
        open_store(url)
    assert "hunter2secret" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_wrong_postgres_password_is_reported_without_it(postgres_service, postgres_server):
    url = postgres_server.replace(postgres_service.password, "hunter2secret")
    with pytest.raises(DatabaseUnavailable, match="password authentication failed") as caught:
        open_store(url)
    assert "hunter2secret" not in str(caught.value)


def test_a_stopped_postgres_server_is_unavailable_and_nothing_stored_is_lost(postgres_service, postgres_database):
    opened = open_store(postgres_database)
    opened.upsert_deal("B000000001", 1_000, 2_000)
    opened.store_deal(committed("B000000001"))
    opened.advance_watermark(Watermark(mark_ms=1_000), 6_000)
    postgres_service.stop()
    try:
        for call in (lambda: opened.upsert_deal("B000000002", 1_000, 7_000), opened.deals_ingested,
                     lambda: open_store(postgres_database)):
            with pytest.raises(DatabaseUnavailable, match="PostgreSQL database .* is unavailable") as caught:
                call()
            assert postgres_service.password not in str(caught.value)
    finally:
        postgres_service.start()
    # the same store reconnects on its next call
    assert opened.deals_ingested() == 1
    assert opened.upsert_deal("B000000002", 1_000, 8_000) is True
    assert opened.load_watermark() == Watermark(mark_ms=1_000)
    t = bind_models(opened.db)
    assert t.LightDeal.get_by_id("B000000001").state == "committed"
    opened.close()


def test_the_store_is_built_from_any_peewee_database(tmp_path):
    db = open_database(f"sqlite:///{tmp_path}/deals.db")
    migrate(db)
    built = Store(db)
    assert built.upsert_deal("B000000001", 1_000, 2_000) is True
    assert isinstance(db, peewee.SqliteDatabase) and "deals.db" in repr(built)
    built.close()


def test_driver_errors_become_peewees_class_of_the_same_db_api_name():
    import sqlite3

    import psycopg2.errors

    assert type(as_peewee_error(sqlite3.OperationalError("database is locked"))) is peewee.OperationalError
    assert type(as_peewee_error(sqlite3.IntegrityError("UNIQUE"))) is peewee.IntegrityError
    assert type(as_peewee_error(psycopg2.errors.UniqueViolation("dup"))) is peewee.IntegrityError
    assert type(as_peewee_error(psycopg2.errors.UndefinedTable("no table"))) is peewee.ProgrammingError
    unrelated = RuntimeError("not a driver error")
    assert as_peewee_error(unrelated) is unrelated
