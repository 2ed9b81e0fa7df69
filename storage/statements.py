"""The pipeline's hot writes as SQL text, built once per database.

Each feed deal, peek verdict and committed deal is its own transaction (see :mod:`storage.store`),
thousands a second at high plans. Building each statement with peewee's query builder cost ~400 us
of Python against ~50 us for SQLite to run it, so these few statements are written out once, for
the columns of :mod:`storage.models`, in SQL that SQLite (3.24+) and PostgreSQL both accept; only
the parameter marker differs. ``tests/test_storage.py`` runs them on both databases.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.models import COMMITTED

DEAL_COLUMNS = ("asin", "title", "price_new", "avg90_new", "drop_percent", "sales_rank", "offers",
                "deal_time_ms", "committed_ms")


def _greatest(column: str, p: str) -> str:
    """``max(column, p)``; ``p`` (a parameter marker or a column) appears twice."""
    return f"CASE WHEN {column} < {p} THEN {p} ELSE {column} END"


@dataclass(frozen=True)
class Statements:
    light_upsert: str        # asin, deal_time_ms, now_ms, now_ms, state, reason: insert, or refresh times
    light_insert: str        # asin, deal_time_ms, now_ms, now_ms, state, reason
    light_refresh: str       # deal_time_ms x2, now_ms x2, asin
    verdict: str             # state, reason, now_ms x2, asin
    deal_insert: str         # the DEAL_COLUMNS in order
    deal_update: str         # the DEAL_COLUMNS but asin, then asin, committed_ms
    light_committed: str     # asin, deal_time_ms, committed_ms, committed_ms


def statements(p: str) -> Statements:
    """The statements with ``p`` as the parameter marker (``?`` for SQLite, ``%s`` for psycopg)."""
    light = "INSERT INTO light_deal (asin, deal_time_ms, first_seen_ms, last_seen_ms, state, reason) "
    rest = DEAL_COLUMNS[1:]
    return Statements(
        light_upsert=(f"{light}VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (asin) DO UPDATE SET "
                      f"deal_time_ms = {_greatest('light_deal.deal_time_ms', 'excluded.deal_time_ms')}, "
                      f"last_seen_ms = {_greatest('light_deal.last_seen_ms', 'excluded.last_seen_ms')}"),
        light_insert=f"{light}VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (asin) DO NOTHING",
        light_refresh=(f"UPDATE light_deal SET deal_time_ms = {_greatest('deal_time_ms', p)}, "
                       f"last_seen_ms = {_greatest('last_seen_ms', p)} WHERE asin = {p}"),
        verdict=(f"UPDATE light_deal SET state = {p}, reason = {p}, claimed_ms = NULL, "
                 f"last_seen_ms = {_greatest('last_seen_ms', p)} WHERE asin = {p} AND state <> '{COMMITTED}'"),
        deal_insert=(f"INSERT INTO deal ({', '.join(DEAL_COLUMNS)}) VALUES ({', '.join([p] * len(DEAL_COLUMNS))}) "
                     "ON CONFLICT (asin) DO NOTHING"),
        deal_update=(f"UPDATE deal SET {', '.join(f'{c} = {p}' for c in rest)} "
                     f"WHERE asin = {p} AND committed_ms <= {p}"),
        light_committed=(f"{light}VALUES ({p}, {p}, {p}, {p}, '{COMMITTED}', '') "
                         f"ON CONFLICT (asin) DO UPDATE SET state = '{COMMITTED}', claimed_ms = NULL"),
    )
