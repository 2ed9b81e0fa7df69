"""The durable store: intent-named functions over SQLite or PostgreSQL.

Every write is one transaction about one ASIN (or the watermark), so a crash between two calls loses
nothing already written, and every write is idempotent: Dramatiq delivers at least once, and a
repeated message writes the same rows, never a duplicate. Callers get plain values, dataclasses
from :mod:`pipeline`, or :class:`keepa_base.errors.StorageError`
(:class:`~keepa_base.errors.DatabaseUnavailable` when retrying later will do); never a model.

A light record moves ``new -> peeking -> rejected | viable -> committed``; ``peeking`` claims of a
crashed worker go back to ``new`` with :meth:`Store.requeue_stale_claims`. A feed deal the screen
set aside on its own numbers (:mod:`pipeline.screen`) is stored ``screened`` with the reason and
stays there: it is never claimed for a peek, and seeing it again only refreshes its times.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterable

import peewee

from keepa_base.errors import DatabaseUnavailable
from pipeline.commit import DealRecord
from pipeline.watermark import Watermark
from storage.db import (
    describe,
    drop_connection,
    open_database,
    reopen_after_fork,
    statement_transaction,
    statement_writes,
    storage_error,
    write_transaction,
)
from storage.migrations import migrate
from storage.models import COMMITTED, NEW, PEEKING, REJECTED, SCREENED, STATES, VIABLE, WATERMARK_ID, bind_models
from storage.statements import DEAL_COLUMNS, statements

log = logging.getLogger(__name__)


def _guarded(method):
    """Run a store call; translate driver errors and drop a failed connection so the next call reconnects."""
    doing = method.__name__.replace("_", " ")

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if self._pid != os.getpid():  # forked (dramatiq worker processes): never share the parent's socket
            self._open_own_database()
        try:
            return method(self, *args, **kwargs)
        except (peewee.DatabaseError, peewee.InterfaceError) as exc:
            if not self.db.in_transaction():
                drop_connection(self.db)
            raise storage_error(self.db, exc, doing) from None
    return call


class Store:
    """:class:`storage.protocol.PipelineStore` on one peewee database (already migrated, see
    :func:`open_store`), plus the reads of the status screen and the exporter."""

    def __init__(self, db: peewee.Database):
        self.db = db
        self._t = bind_models(db)
        self._postgres = isinstance(db, peewee.PostgresqlDatabase)
        self._pid = os.getpid()
        self._sql = statements(db.param)

    def _open_own_database(self) -> None:
        self.db = reopen_after_fork(self.db)
        self._t = bind_models(self.db)
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"Store({describe(self.db)})"

    def close(self) -> None:
        """Close this thread's connection (other threads' connections close with their threads)."""
        drop_connection(self.db)

    # -- light records and candidates -------------------------------------------------------------

    @_guarded
    def upsert_deal(self, asin: str, deal_time_ms: int, now_ms: int, screened_reason: str | None = None) -> bool:
        """Store or refresh the light record; True if the ASIN was never seen: it becomes a candidate,
        or with ``screened_reason`` is stored ``screened`` (never a candidate). A known ASIN keeps
        its state and reason."""
        sql = self._sql
        state = NEW if screened_reason is None else SCREENED
        with statement_transaction(self.db) as run:
            inserted = run(sql.light_insert, (asin, deal_time_ms, now_ms, now_ms, state, screened_reason or "")) > 0
            if not inserted:
                run(sql.light_refresh, (deal_time_ms, deal_time_ms, now_ms, now_ms, asin))
        return inserted

    @_guarded
    def upsert_deals(self, deals: Iterable[tuple], now_ms: int) -> int:
        """Store or refresh the light records of a feed page, ``(asin, deal_time_ms)`` or
        ``(asin, deal_time_ms, screened_reason)`` each: a new ASIN with a reason is stored
        ``screened`` (never a candidate), one without (or with ``None``) becomes a candidate; a known
        ASIN keeps its state and reason. Every ASIN its own one-statement transaction, the write lock
        taken once for the page. How many written."""
        sql, count = self._sql.light_upsert, 0
        with statement_writes(self.db) as run:
            for asin, deal_time_ms, *screened in deals:
                reason = screened[0] if screened else None
                state = NEW if reason is None else SCREENED
                run(sql, (asin, deal_time_ms, now_ms, now_ms, state, reason or ""))
                count += 1
        return count

    @_guarded
    def take_candidates(self, n: int, now_ms: int, at_least: int = 1) -> list[str]:
        """Claim up to ``n`` of the oldest new ASINs for a peek (state ``peeking``); never the same twice.
        Fewer than ``at_least`` waiting: claim none (see :func:`pipeline.batching.peek_claim_minimum`)."""
        if n <= 0:
            return []
        L = self._t.LightDeal
        with write_transaction(self.db):
            query = (L.select(L.asin).where(L.state == NEW)
                     .order_by(L.first_seen_ms, L.asin).limit(n))
            if self._postgres:  # SQLite's BEGIN IMMEDIATE already holds the only write lock
                query = query.for_update("FOR UPDATE SKIP LOCKED")
            asins = [asin for (asin,) in query.tuples()]
            if len(asins) < min(at_least, n):
                return []
            if asins:
                (L.update(state=PEEKING, claimed_ms=now_ms)
                 .where(L.asin.in_(asins), L.state == NEW).execute())
        return asins

    @_guarded
    def release_candidate(self, asin: str) -> bool:
        """Give a claimed ASIN back (state ``new``, its place in line kept); False if it was not claimed."""
        L = self._t.LightDeal
        with write_transaction(self.db):
            changed = (L.update(state=NEW, claimed_ms=None)
                       .where(L.asin == asin, L.state == PEEKING).execute())
        return bool(changed)

    @_guarded
    def requeue_stale_claims(self, older_than_ms: int, now_ms: int, in_use: Iterable[str] = ()) -> int:
        """Return claims older than ``older_than_ms`` (an age, not a time: a crashed worker's claims)
        to ``new``, but none of ``in_use`` (ASINs a peek still waiting somewhere will answer); how many."""
        if older_than_ms < 0 or older_than_ms > now_ms:
            raise ValueError(f"older_than_ms is an age in ms (0..now_ms), got {older_than_ms} at now_ms {now_ms}")
        L = self._t.LightDeal
        keep = set(in_use)
        with write_transaction(self.db):
            stale = [asin for (asin,) in L.select(L.asin).where(
                L.state == PEEKING, L.claimed_ms < now_ms - older_than_ms).tuples() if asin not in keep]
            count = 0
            for at in range(0, len(stale), 500):
                count += (L.update(state=NEW, claimed_ms=None)
                          .where(L.asin.in_(stale[at:at + 500]), L.state == PEEKING).execute())
        if count:
            log.info("requeued %d candidates claimed more than %d ms ago", count, older_than_ms)
        return count

    def record_verdict(self, asin: str, viable: bool, reason: str, now_ms: int) -> None:
        """Record the peek verdict; a committed deal keeps its state (a late repeat changes nothing)."""
        self.record_verdicts([(asin, viable, reason)], now_ms)

    @_guarded
    def record_verdicts(self, verdicts: Iterable[tuple[str, bool, str]], now_ms: int) -> None:
        """:meth:`record_verdict` for each ``(asin, viable, reason)``: every one its own one-statement
        transaction, the write lock taken once for all."""
        sql = self._sql.verdict
        with statement_writes(self.db) as run:
            for asin, viable, reason in verdicts:
                if not run(sql, (VIABLE if viable else REJECTED, reason, now_ms, now_ms, asin)):
                    log.debug("verdict for %s not recorded: unknown or already committed", asin)

    # -- malformed products -----------------------------------------------------------------------

    @_guarded
    def record_product_failure(self, asin: str, stage: str, reason: str, now_ms: int) -> int:
        """Count one malformed answer for ``asin`` (``stage``: peek or commit); how many so far."""
        F = self._t.ProductFailure
        with write_transaction(self.db):
            (F.insert(asin=asin, stage=stage, failures=1, reason=reason, updated_ms=now_ms)
             .on_conflict(conflict_target=[F.asin],
                          update={F.failures: F.failures + 1, F.stage: stage, F.reason: reason, F.updated_ms: now_ms})
             .execute())
            return F.select(F.failures).where(F.asin == asin).scalar()

    @_guarded
    def set_aside(self, asin: str, stage: str, reason: str, now_ms: int) -> None:
        """No more calls for ``asin`` until an operator replays it: its failure row says why, and its
        light record leaves the pipeline (``rejected``, the reason saying it is set aside)."""
        F, L = self._t.ProductFailure, self._t.LightDeal
        with write_transaction(self.db):
            (F.insert(asin=asin, stage=stage, failures=0, reason=reason, updated_ms=now_ms, set_aside_ms=now_ms)
             .on_conflict(conflict_target=[F.asin], update={F.set_aside_ms: now_ms, F.updated_ms: now_ms})
             .execute())
            (L.update(state=REJECTED, claimed_ms=None, reason=f"set aside after malformed answers: {reason}"[:500])
             .where(L.asin == asin, L.state != COMMITTED).execute())
        log.warning("set aside %s after malformed %s answers: %s", asin, stage, reason)

    @_guarded
    def products_set_aside(self) -> int:
        F = self._t.ProductFailure
        return F.select().where(F.set_aside_ms.is_null(False)).count()

    @_guarded
    def set_aside_products(self) -> list[dict]:
        """Each set-aside product: asin, stage, failures, reason, set_aside_ms (oldest first)."""
        F = self._t.ProductFailure
        query = (F.select(F.asin, F.stage, F.failures, F.reason, F.set_aside_ms)
                 .where(F.set_aside_ms.is_null(False)).order_by(F.set_aside_ms, F.asin))
        return list(query.dicts())

    @_guarded
    def replay_set_aside(self, asins: Iterable[str] | None = None) -> list[str]:
        """Put set-aside products (all, or those of ``asins``) back in line as new candidates, their
        failure count cleared; which ASINs went back."""
        F, L = self._t.ProductFailure, self._t.LightDeal
        with write_transaction(self.db):
            query = F.select(F.asin).where(F.set_aside_ms.is_null(False))
            if asins is not None:
                query = query.where(F.asin.in_(list(asins)))
            chosen = [asin for (asin,) in query.tuples()]
            for at in range(0, len(chosen), 500):
                part = chosen[at:at + 500]
                F.delete().where(F.asin.in_(part)).execute()
                (L.update(state=NEW, claimed_ms=None, reason="")
                 .where(L.asin.in_(part), L.state == REJECTED).execute())
        return chosen

    # -- committed deals --------------------------------------------------------------------------

    @_guarded
    def store_deal(self, record: DealRecord) -> bool:
        """Upsert the visible deal and mark its light record committed; True if the deal is new.

        A repeat writes the same row; an older record arriving late does not overwrite a newer one.
        """
        sql = self._sql
        values = tuple(getattr(record, c) for c in DEAL_COLUMNS)
        with statement_transaction(self.db) as run:
            inserted = run(sql.deal_insert, values) > 0
            if not inserted:
                run(sql.deal_update, (*values[1:], record.asin, record.committed_ms))
            run(sql.light_committed, (record.asin, record.deal_time_ms, record.committed_ms, record.committed_ms))
        return inserted

    # -- the watermark ----------------------------------------------------------------------------

    @_guarded
    def load_watermark(self) -> Watermark:
        W = self._t.WatermarkRow
        row = (W.select(W.mark_ms, W.scan_top_ms, W.next_page)
               .where(W.id == WATERMARK_ID).tuples().first())
        if row is None:
            return Watermark()
        mark_ms, scan_top_ms, next_page = row
        return Watermark(mark_ms=mark_ms, scan_top_ms=scan_top_ms, next_page=next_page or 0)

    @_guarded
    def advance_watermark(self, watermark: Watermark, now_ms: int, from_page: int | None = None) -> Watermark:
        """Save the watermark and scan cursor; return what is stored now.

        ``mark_ms`` never moves backwards: a state whose mark is older than the stored one (a late or
        repeated message from a finished scan) is ignored as a whole, cursor included. With
        ``from_page`` the state is saved only if the stored cursor is still at that page (it was
        computed from there): a second run of the same grant can never move the cursor twice.
        """
        W = self._t.WatermarkRow
        moved = W.mark_moved_ms
        if watermark.mark_ms is None:
            fresh = W.mark_ms.is_null()
        else:
            fresh = W.mark_ms.is_null() | (W.mark_ms <= watermark.mark_ms)
            moved = peewee.Case(None, [(W.mark_ms.is_null() | (W.mark_ms != watermark.mark_ms), now_ms)], moved)
        if from_page is not None:
            fresh &= peewee.fn.COALESCE(W.next_page, 0) == from_page
        with write_transaction(self.db):
            changed = (W.update(mark_ms=watermark.mark_ms, scan_top_ms=watermark.scan_top_ms,
                                next_page=watermark.next_page, updated_ms=now_ms, mark_moved_ms=moved)
                       .where(W.id == WATERMARK_ID, fresh).execute())
        stored = self.load_watermark()
        if not changed:
            log.info("ignored a stale watermark %s: %s is stored", watermark, stored)
        return stored

    # -- counts for status and metrics ------------------------------------------------------------

    @_guarded
    def deals_stored(self) -> int:
        """Light records stored (every ASIN the feed ever showed)."""
        return self._t.LightDeal.select().count()

    @_guarded
    def deal_times(self, asins: Iterable[str]) -> dict[str, int]:
        """The feed time of each of ``asins`` that has a light record (the deal's time in the feed)."""
        L, asins = self._t.LightDeal, list(asins)
        found: dict[str, int] = {}
        for at in range(0, len(asins), 500):
            found.update(L.select(L.asin, L.deal_time_ms).where(L.asin.in_(asins[at:at + 500])).tuples())
        return found

    @_guarded
    def deals_ingested(self) -> int:
        """Committed, visible deals."""
        return self._t.Deal.select().count()

    @_guarded
    def deals_ingested_since(self, since_ms: int) -> int:
        D = self._t.Deal
        return D.select().where(D.committed_ms >= since_ms).count()

    @_guarded
    def last_ingested_ms(self) -> int | None:
        D = self._t.Deal
        return D.select(peewee.fn.MAX(D.committed_ms)).scalar()

    @_guarded
    def deals_by_state(self) -> dict[str, int]:
        """How many light records are in each pipeline state (every state present, 0 if none)."""
        L = self._t.LightDeal
        counts = dict.fromkeys(STATES, 0)
        counts.update(L.select(L.state, peewee.fn.COUNT(L.asin)).group_by(L.state).tuples())
        return counts

    @_guarded
    def deals_screened_out(self) -> int:
        """Feed deals set aside on their own numbers (state ``screened``): no token was spent on them."""
        L = self._t.LightDeal
        return L.select().where(L.state == SCREENED).count()

    @_guarded
    def candidates_waiting(self) -> int:
        """New ASINs not yet claimed for a peek."""
        L = self._t.LightDeal
        return L.select().where(L.state == NEW).count()

    @_guarded
    def feed_last_scan_ms(self) -> int | None:
        """When (this system's clock) a feed scan last stored a page: a scan writes the watermark row
        after every page it reads, whether the page held anything new or not, the page that ends the
        scan included. None before the first page. The stall alerts tell "scans stopped" from "scans
        run and find nothing new" by it."""
        W = self._t.WatermarkRow
        return W.select(W.updated_ms).where(W.id == WATERMARK_ID).scalar()

    @_guarded
    def oldest_claim_ms(self) -> int | None:
        """When the oldest candidate still claimed for a peek (state ``peeking``) was claimed; None if
        no candidate is claimed. A claim lives for one peek call; the scheduler returns those of a
        crashed worker after ten Keepa minutes, so an old one means claims are stuck."""
        L = self._t.LightDeal
        return L.select(peewee.fn.MIN(L.claimed_ms)).where(L.state == PEEKING).scalar()

    @_guarded
    def watermark_age_ms(self, now_ms: int) -> int | None:
        """How long ago (``now_ms`` on this system's clock) a scan last moved the watermark; None
        before the first scan ends. Not ``now_ms - mark_ms``: the mark is a deal time on Keepa's
        clock, which the embedded server runs faster."""
        W = self._t.WatermarkRow
        row = (W.select(W.mark_ms, peewee.fn.COALESCE(W.mark_moved_ms, W.updated_ms))
               .where(W.id == WATERMARK_ID).tuples().first())
        return None if row is None or row[0] is None else now_ms - row[1]


MIGRATE_ATTEMPTS = 5


def open_store(database_url: str, *, sleep=time.sleep, **options) -> Store:
    """Open the database ``database_url`` names, create or migrate its schema, and return its store.

    ``options`` go to :func:`storage.db.open_database` (``busy_timeout_ms`` for SQLite). Processes
    started together on a new SQLite file (``make run``) can meet SQLite's deadlock guard while one
    of them switches the file to WAL: it answers "database is locked" at once instead of waiting, so
    a locked database is tried again, after 0.1, 0.2, 0.4 and 0.8 s, before the error stands.
    """
    db = open_database(database_url, **options)
    for attempt in range(MIGRATE_ATTEMPTS):
        try:
            migrate(db)
            break
        except DatabaseUnavailable as exc:
            if attempt + 1 == MIGRATE_ATTEMPTS or "locked" not in str(exc):
                raise
            log.warning("%s; trying again", exc)
            sleep(0.1 * 2 ** attempt)
    log.info("storage ready: %s", describe(db))
    return Store(db)
