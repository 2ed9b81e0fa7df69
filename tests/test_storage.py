"""The durable store on SQLite (a temporary file) and on a real PostgreSQL server."""

from __future__ import annotations

import multiprocessing
import threading
from dataclasses import asdict

import peewee
import pytest

import storage.store
from keepa_base.errors import DatabaseUnavailable, StorageError
from pipeline.commit import DealRecord
from pipeline.watermark import Watermark
from storage.db import open_database, statement_transaction
from storage.migrations import LATEST, STEPS, migrate, schema_version
from storage.models import bind_models
from storage.store import Store, open_store

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/deals.db"
    return request.getfixturevalue("postgres_database")


@pytest.fixture
def store(database_url):
    opened = open_store(database_url)
    yield opened
    opened.close()


def light(store: Store, asin: str) -> dict:
    t = bind_models(store.db)
    return t.LightDeal.select().where(t.LightDeal.asin == asin).dicts().get()


def record(asin: str = "B000000001", *, committed_ms: int = 5_000, title: str = "Kettle") -> DealRecord:
    return DealRecord(asin=asin, title=title, price_new=1999, avg90_new=2999, drop_percent=33.34,
                      sales_rank=1200, offers=4, deal_time_ms=1_000, committed_ms=committed_ms)


def run_together(workers: int, target) -> list:
    """Run ``target(i)`` on ``workers`` threads released at the same instant; re-raise any failure."""
    barrier = threading.Barrier(workers)
    results: list = [None] * workers
    errors: list = []

    def body(i):
        try:
            barrier.wait(timeout=10)
            results[i] = target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    if errors:
        raise errors[0]
    return results


# -- schema ---------------------------------------------------------------------------------------

def test_a_new_database_gets_every_step_and_rerunning_migrations_changes_nothing(store):
    assert schema_version(store.db) == LATEST
    store.upsert_deal("B000000001", 1_000, 2_000)
    assert migrate(store.db) == LATEST
    assert migrate(store.db) == LATEST
    t = bind_models(store.db)
    assert t.SchemaVersion.select().count() == len(STEPS)
    assert store.deals_stored() == 1


def _migrate_once(database_url, barrier, versions):
    barrier.wait(10)
    store = open_store(database_url)  # as every process opens its storage, so with its retry
    versions.put(schema_version(store.db))
    store.close()


def test_migrations_started_by_several_processes_at_once_apply_each_step_once(database_url):
    ctx = multiprocessing.get_context("fork")
    barrier, versions = ctx.Barrier(4), ctx.Queue()
    processes = [ctx.Process(target=_migrate_once, args=(database_url, barrier, versions)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
    assert [process.exitcode for process in processes] == [0] * 4
    assert sorted(versions.get(timeout=5) for _ in processes) == [LATEST] * 4
    db = open_database(database_url)
    assert bind_models(db).SchemaVersion.select().count() == len(STEPS)
    db.close()


def test_a_database_locked_at_start_is_tried_again_and_any_other_failure_stands(tmp_path, monkeypatch):
    real, calls, slept = storage.store.migrate, [], []

    def locked_twice(db):
        calls.append(db)
        if len(calls) <= 2:
            raise DatabaseUnavailable("SQLite file x.db is unavailable while migrating: database is locked")
        return real(db)

    monkeypatch.setattr(storage.store, "migrate", locked_twice)
    store = open_store(f"sqlite:///{tmp_path}/deals.db", sleep=slept.append)
    assert len(calls) == 3 and slept == [0.1, 0.2] and schema_version(store.db) == LATEST
    store.close()

    def full(db):
        raise DatabaseUnavailable("SQLite file x.db is unavailable while migrating: disk I/O error")

    monkeypatch.setattr(storage.store, "migrate", full)
    slept.clear()
    with pytest.raises(DatabaseUnavailable, match="disk I/O"):
        open_store(f"sqlite:///{tmp_path}/other.db", sleep=slept.append)
    assert slept == []

    calls.clear()
    monkeypatch.setattr(storage.store, "migrate", locked_twice)
    monkeypatch.setattr(storage.store, "MIGRATE_ATTEMPTS", 2)
    with pytest.raises(DatabaseUnavailable, match="locked"):  # locked every time: the error stands
        open_store(f"sqlite:///{tmp_path}/third.db", sleep=slept.append)
    assert slept == [0.1] and len(calls) == 2


def test_a_new_step_is_applied_once_on_the_next_start(store):
    calls = []
    steps = [*STEPS, (LATEST + 1, "a later change", lambda db, t: calls.append(db))]
    assert migrate(store.db, steps) == LATEST + 1
    assert migrate(store.db, steps) == LATEST + 1
    assert len(calls) == 1


# -- light records and candidates -----------------------------------------------------------------

def test_upserting_a_deal_again_writes_the_same_row_never_a_duplicate(store):
    assert store.upsert_deal("B000000001", 1_000, 10_000) is True
    assert store.upsert_deal("B000000001", 1_000, 10_000) is False
    assert store.upsert_deal("B000000001", 900, 11_000) is False
    assert store.deals_stored() == 1
    assert store.candidates_waiting() == 1
    row = light(store, "B000000001")
    assert (row["deal_time_ms"], row["first_seen_ms"], row["last_seen_ms"], row["state"]) == \
        (1_000, 10_000, 11_000, "new")


def test_a_newer_deal_time_refreshes_the_light_record(store):
    store.upsert_deal("B000000001", 1_000, 10_000)
    store.upsert_deal("B000000001", 3_000, 12_000)
    assert light(store, "B000000001")["deal_time_ms"] == 3_000


def test_a_deal_seen_again_after_its_verdict_is_not_a_candidate_again(store):
    store.upsert_deal("B000000001", 1_000, 10_000)
    assert store.take_candidates(1, 11_000) == ["B000000001"]
    store.record_verdict("B000000001", False, "drop below 20%", 12_000)
    assert store.upsert_deal("B000000001", 2_000, 13_000) is False
    assert store.take_candidates(5, 14_000) == []
    assert light(store, "B000000001")["state"] == "rejected"
    assert light(store, "B000000001")["reason"] == "drop below 20%"


def test_candidates_are_handed_out_oldest_first_and_never_twice(store):
    for i in range(5):
        store.upsert_deal(f"B00000000{i}", 1_000, 10_000 + i)
    assert store.take_candidates(2, 20_000) == ["B000000000", "B000000001"]
    assert store.take_candidates(2, 20_000) == ["B000000002", "B000000003"]
    assert store.take_candidates(9, 20_000) == ["B000000004"]
    assert store.take_candidates(9, 20_000) == []
    assert store.take_candidates(0, 20_000) == []
    assert store.candidates_waiting() == 0
    assert light(store, "B000000000")["claimed_ms"] == 20_000


def test_concurrent_workers_never_claim_the_same_candidate(store):
    asins = [f"B{i:09d}" for i in range(120)]
    for i, asin in enumerate(asins):
        store.upsert_deal(asin, 1_000, 10_000 + i)

    def worker(i):
        claimed = []
        try:
            while batch := store.take_candidates(3, 20_000 + i):
                claimed.extend(batch)
        finally:
            store.close()  # this thread's connection
        return claimed

    results = run_together(4, worker)
    claimed = [asin for batch in results for asin in batch]
    assert len(claimed) == len(set(claimed)) == len(asins)
    assert store.candidates_waiting() == 0


def _claim_in_a_child(store, claims):
    claims.put(store.take_candidates(5, 30_000))
    store.close()


def test_a_store_used_after_a_fork_opens_its_own_connection(store):
    store.upsert_deal("B000000001", 1_000, 10_000)
    assert store.candidates_waiting() == 1  # the parent's connection is open now
    ctx = multiprocessing.get_context("fork")
    claims = ctx.Queue()
    child = ctx.Process(target=_claim_in_a_child, args=(store, claims))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert claims.get(timeout=5) == ["B000000001"]
    assert store.candidates_waiting() == 0
    assert store.upsert_deal("B000000002", 1_000, 31_000) is True


def test_a_released_candidate_goes_back_to_its_place_in_line(store):
    for i in range(3):
        store.upsert_deal(f"B00000000{i}", 1_000, 10_000 + i)
    assert store.take_candidates(1, 20_000) == ["B000000000"]
    assert store.release_candidate("B000000000") is True
    assert store.release_candidate("B000000000") is False
    assert store.take_candidates(1, 21_000) == ["B000000000"]


def test_claims_of_a_crashed_worker_go_back_to_new_after_the_timeout(store):
    store.upsert_deal("B000000001", 1_000, 10_000)
    store.upsert_deal("B000000002", 1_000, 10_001)
    store.take_candidates(1, 20_000)
    store.take_candidates(1, 50_000)
    assert store.requeue_stale_claims(60_000, 60_000) == 0
    assert store.requeue_stale_claims(60_000, 80_001) == 1
    assert store.take_candidates(5, 80_002) == ["B000000001"]
    assert store.requeue_stale_claims(60_000, 200_000) == 2


def test_a_stale_claim_that_a_peek_on_its_way_will_answer_stays_claimed(store):
    for asin in ("B000000001", "B000000002"):
        store.upsert_deal(asin, 1_000, 10_000)
    store.take_candidates(2, 20_000)
    assert store.requeue_stale_claims(60_000, 90_000, in_use={"B000000002"}) == 1
    assert light(store, "B000000002")["state"] == "peeking" and light(store, "B000000001")["state"] == "new"
    with pytest.raises(ValueError, match="an age"):  # a time passed where the age belongs
        store.requeue_stale_claims(90_000 - 60_000 * 10, 90_000 - 1)


def test_a_verdict_takes_a_candidate_out_of_line_and_never_undoes_a_commit(store):
    store.upsert_deal("B000000001", 1_000, 10_000)
    store.take_candidates(1, 11_000)
    store.record_verdict("B000000001", True, "drop 33%", 12_000)
    assert light(store, "B000000001")["state"] == "viable"
    assert light(store, "B000000001")["claimed_ms"] is None
    store.store_deal(record("B000000001"))
    store.record_verdict("B000000001", True, "drop 33%", 13_000)  # a repeated message
    assert light(store, "B000000001")["state"] == "committed"
    store.record_verdict("B000000404", False, "never seen", 13_000)
    assert store.deals_stored() == 1


# -- committed deals ------------------------------------------------------------------------------

def test_a_feed_page_writes_each_asin_on_its_own_and_a_bad_one_keeps_those_before_it(store):
    store.upsert_deal("B000000001", 1_000, 1_000)
    assert store.upsert_deals([("B000000001", 3_000), ("B000000002", 2_000)], 5_000) == 2
    first, second = light(store, "B000000001"), light(store, "B000000002")
    assert (first["deal_time_ms"], first["first_seen_ms"], first["last_seen_ms"]) == (3_000, 1_000, 5_000)
    assert (second["state"], second["first_seen_ms"]) == ("new", 5_000)
    store.upsert_deals([("B000000001", 2_000)], 4_000)  # an older sighting moves nothing back
    assert (light(store, "B000000001")["deal_time_ms"], light(store, "B000000001")["last_seen_ms"]) == (3_000, 5_000)
    with pytest.raises(StorageError):
        store.upsert_deals([("B000000003", 1_000), (None, 1_000), ("B000000004", 1_000)], 6_000)
    assert store.deals_stored() == 3  # B000000003 stayed, nothing after the bad one was written
    store.record_verdicts([("B000000002", True, "viable"), ("B000000003", False, "no drop")], 7_000)
    assert (light(store, "B000000002")["state"], light(store, "B000000003")["reason"]) == ("viable", "no drop")


def test_a_failed_hot_write_rolls_back_whole_and_the_next_write_works(store):
    store.upsert_deal("B000000001", 1_000, 1_000)
    with pytest.raises(RuntimeError), statement_transaction(store.db) as run:
        assert run(store._sql.verdict, ("viable", "half a write", 2_000, 2_000, "B000000001")) == 1
        raise RuntimeError("the worker dies between two statements")
    assert light(store, "B000000001")["state"] == "new"  # nothing of the failed transaction stayed
    with pytest.raises(peewee.DatabaseError), statement_transaction(store.db) as run:
        run("INSERT INTO no_such_table VALUES (1)", ())
    store.record_verdict("B000000001", True, "viable", 3_000)
    assert light(store, "B000000001")["state"] == "viable"


def test_a_hot_write_refuses_to_run_inside_another_transaction(store):
    with pytest.raises(ValueError, match="manual commit"), store.db.atomic(), statement_transaction(store.db) as run:
        run(store._sql.verdict, ("viable", "nested", 2_000, 2_000, "B000000001"))
    store.upsert_deal("B000000001", 1_000, 3_000)  # the refused write left no transaction open
    assert not store.db.in_transaction() and store.deals_stored() == 1


def test_storing_a_deal_again_writes_the_same_row(store):
    store.upsert_deal("B000000001", 1_000, 2_000)
    assert store.store_deal(record()) is True
    assert store.store_deal(record()) is False
    assert store.deals_ingested() == 1
    assert store.deals_stored() == 1
    assert light(store, "B000000001")["state"] == "committed"
    t = bind_models(store.db)
    assert list(t.Deal.select().dicts()) == [{**asdict(record()), "drop_percent": pytest.approx(33.34)}]


def test_a_late_older_commit_does_not_overwrite_a_newer_one(store):
    store.store_deal(record(committed_ms=9_000, title="newer"))
    store.store_deal(record(committed_ms=5_000, title="older"))
    t = bind_models(store.db)
    assert t.Deal.select(t.Deal.title).scalar() == "newer"
    assert store.last_ingested_ms() == 9_000


def test_storing_a_deal_never_upserted_creates_its_light_record(store):
    assert store.store_deal(record("B000000009")) is True
    assert light(store, "B000000009")["state"] == "committed"
    assert store.candidates_waiting() == 0


# -- the watermark --------------------------------------------------------------------------------

def test_the_watermark_is_stored_beside_the_deals_and_survives_a_restart(store, database_url):
    assert store.load_watermark() == Watermark()
    saved = store.advance_watermark(Watermark(mark_ms=None, scan_top_ms=7_000, next_page=3), 8_000)
    assert saved == Watermark(mark_ms=None, scan_top_ms=7_000, next_page=3)
    store.advance_watermark(Watermark(mark_ms=7_000), 9_000)
    reopened = open_store(database_url)
    assert reopened.load_watermark() == Watermark(mark_ms=7_000)
    reopened.close()


def test_the_watermark_never_moves_backwards_when_messages_arrive_out_of_order(store):
    store.advance_watermark(Watermark(mark_ms=7_000), 9_000)
    assert store.advance_watermark(Watermark(mark_ms=5_000, scan_top_ms=6_000, next_page=2), 9_500) == \
        Watermark(mark_ms=7_000)
    assert store.advance_watermark(Watermark(mark_ms=None, scan_top_ms=6_000, next_page=1), 9_600) == \
        Watermark(mark_ms=7_000)
    scanning = Watermark(mark_ms=7_000, scan_top_ms=8_000, next_page=1)
    assert store.advance_watermark(scanning, 10_000) == scanning
    assert store.advance_watermark(Watermark(mark_ms=8_000), 11_000) == Watermark(mark_ms=8_000)
    assert store.load_watermark() == Watermark(mark_ms=8_000)


def test_the_watermark_age_counts_from_when_a_scan_last_moved_the_mark_on_our_clock(store):
    """The mark is a deal time on Keepa's clock (the embedded server's runs faster than ours), so the
    age is measured from when the mark last moved, never from the mark itself."""
    assert store.watermark_age_ms(5_000) is None
    store.advance_watermark(Watermark(mark_ms=None, scan_top_ms=900_000, next_page=1), 2_000)
    assert store.watermark_age_ms(5_000) is None              # a first scan under way sets no mark
    store.advance_watermark(Watermark(mark_ms=900_000), 3_000)  # a deal time far ahead of our clock
    assert store.watermark_age_ms(5_000) == 2_000
    store.advance_watermark(Watermark(mark_ms=900_000, scan_top_ms=950_000, next_page=1), 4_000)
    store.advance_watermark(Watermark(mark_ms=900_000), 6_000)  # a scan that found nothing newer
    store.advance_watermark(Watermark(mark_ms=800_000), 7_000)  # a late message: ignored
    assert store.watermark_age_ms(8_000) == 5_000
    store.advance_watermark(Watermark(mark_ms=960_000), 9_000)
    assert store.watermark_age_ms(10_000) == 1_000


def test_a_database_from_before_the_mark_time_column_gets_it_from_the_rows_last_write(database_url):
    db = open_database(database_url)
    assert migrate(db, STEPS[:2]) == 2
    db.execute_sql("ALTER TABLE watermark DROP COLUMN mark_moved_ms")  # as step 1 made it then
    db.execute_sql("UPDATE watermark SET mark_ms = 900000, updated_ms = 3000")
    assert migrate(db) == LATEST
    assert Store(db).watermark_age_ms(5_000) == 2_000
    db.close()


# -- counts ---------------------------------------------------------------------------------------

def test_counts_for_status_and_metrics(store):
    assert (store.deals_stored(), store.deals_ingested(), store.candidates_waiting()) == (0, 0, 0)
    assert store.last_ingested_ms() is None
    assert store.watermark_age_ms(10_000) is None
    for i in range(4):
        store.upsert_deal(f"B00000000{i}", 1_000, 2_000)
    store.take_candidates(1, 3_000)
    store.store_deal(record("B000000002", committed_ms=60_000))
    store.store_deal(record("B000000003", committed_ms=120_000))
    store.advance_watermark(Watermark(mark_ms=100_000), 120_000)
    assert store.deals_stored() == 4
    assert store.deals_ingested() == 2
    assert store.deals_ingested_since(60_001) == 1
    assert store.deals_ingested_since(60_000) == 2
    assert store.last_ingested_ms() == 120_000
    assert store.candidates_waiting() == 1
    assert store.watermark_age_ms(130_000) == 10_000   # since the mark moved, on our clock
    assert all(type(v) is int for v in (store.deals_stored(), store.deals_ingested(), store.last_ingested_ms()))
