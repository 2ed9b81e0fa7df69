"""Open the peewee database a ``DATABASE_URL`` names.

    sqlite:///relative/path.db     a file relative to the working directory (the default,
                                   ``sqlite:///var/keepa-deals.db``)
    sqlite:////absolute/path.db    an absolute path
    postgresql://user:password@host:port/name[?sslmode=...]   (``postgres://`` too)

SQLite runs in WAL mode (readers never block the writer) with a busy timeout, foreign keys on,
``synchronous=normal`` (durable with WAL) and ``BEGIN IMMEDIATE`` write transactions, so concurrent writers
queue on the busy timeout instead of failing on a lock upgrade. The SQLite file's folder is created.

A bad URL raises :class:`ConfigError` naming ``DATABASE_URL``; a database that cannot be reached or
opened raises :class:`DatabaseUnavailable`. No message ever contains the password.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from urllib.parse import parse_qsl, unquote, urlsplit

import peewee

from keepa_base.errors import ConfigError, DatabaseUnavailable, StorageError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 5
VARIABLE = "DATABASE_URL"
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe for logs and error messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def describe(db: peewee.Database) -> str:
    """A short, password-free name of the database for messages."""
    if isinstance(db, peewee.PostgresqlDatabase):
        params = db.connect_params
        return (f"PostgreSQL database {db.database!r} at {params.get('host')}:{params.get('port', 5432)}"
                f" (user {params.get('user')!r})")
    return f"SQLite file {db.database}"


def sqlite_path(url: str) -> str:
    """The file path a ``sqlite://`` URL names (``:memory:`` allowed)."""
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigError(f"{VARIABLE} must be sqlite:///relative/path or sqlite:////absolute/path "
                          f"(three or four slashes), got {url!r}")
    path = unquote(parts.path)[1:]
    if not path or path.endswith("/"):
        raise ConfigError(f"{VARIABLE} must name a SQLite file, got {url!r}")
    return path


def open_database(url: str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> peewee.Database:
    """A peewee database for ``url``; nothing is connected yet except to check the SQLite folder."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{VARIABLE} is empty; set it to sqlite:///path.db or postgresql://user@host/name")
    url = url.strip()
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        db = _sqlite(sqlite_path(url), busy_timeout_ms)
    elif scheme in _POSTGRES_SCHEMES:
        db = _postgres(url)
    else:
        raise ConfigError(f"{VARIABLE} must start with sqlite:// or postgresql://, got {redact_url(url)!r}")
    _OPENED_AS[db] = (url, busy_timeout_ms)
    return db


# How open_database opened each database, so a forked child can open its own (reopen_after_fork).
_OPENED_AS: weakref.WeakKeyDictionary[peewee.Database, tuple[str, int]] = weakref.WeakKeyDictionary()
# The parent's databases a forked child replaced: kept referenced and never closed, since closing
# (or collecting) a connection in the child would end the parent's PostgreSQL session on the
# socket both share. peewee's advice for processes: connect only after the fork.
_LEFT_TO_PARENT: list[peewee.Database] = []


def reopen_after_fork(db: peewee.Database) -> peewee.Database:
    """A new database object opened as ``db`` was, not connected yet, for a forked child; ``db``
    and the parent's connection in it are left untouched."""
    try:
        url, busy_timeout_ms = _OPENED_AS[db]
    except KeyError:
        raise StorageError(f"{describe(db)} was not opened by open_database, so a forked process "
                           "cannot open its own") from None
    _LEFT_TO_PARENT.append(db)
    return open_database(url, busy_timeout_ms=busy_timeout_ms)


def _sqlite(path: str, busy_timeout_ms: int) -> peewee.SqliteDatabase:
    if path != ":memory:":
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailable(f"cannot create the folder {folder} for the SQLite file named by "
                                      f"{VARIABLE}: {exc.strerror or exc}") from None
    pragmas = {
        "journal_mode": "wal",
        "busy_timeout": int(busy_timeout_ms),
        "foreign_keys": 1,
        "synchronous": "normal",
    }
    # sqlite3's own timeout (seconds) installs the same busy handler; keep both consistent.
    db = peewee.SqliteDatabase(path, pragmas=pragmas, timeout=busy_timeout_ms / 1000, autoconnect=True)
    return db


def _postgres(url: str) -> peewee.PostgresqlDatabase:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{VARIABLE} has an invalid host or port: {redact_url(url)!r}") from None
    name = unquote(parts.path.lstrip("/"))
    if not parts.hostname:
        raise ConfigError(f"{VARIABLE} must name a PostgreSQL host, got {redact_url(url)!r}")
    if not name or "/" in name:
        raise ConfigError(f"{VARIABLE} must name one PostgreSQL database after the host, got {redact_url(url)!r}")
    params: dict = {"host": parts.hostname, "connect_timeout": CONNECT_TIMEOUT_S}
    if port:
        params["port"] = port
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password is not None:
        params["password"] = unquote(parts.password)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        params[key] = value
    return peewee.PostgresqlDatabase(name, autoconnect=True, **params)


# One Python lock per SQLite database object and process (see write_transaction); a forked child
# finds its parent's entry under another pid and makes its own.
_WRITE_LOCKS: weakref.WeakKeyDictionary[peewee.Database, tuple[int, threading.RLock]] = weakref.WeakKeyDictionary()
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(db: peewee.Database):
    """The process's write lock of ``db`` (SQLite), or no lock (PostgreSQL takes row locks itself)."""
    if not isinstance(db, peewee.SqliteDatabase):
        return contextlib.nullcontext()
    pid = os.getpid()
    held = _WRITE_LOCKS.get(db)
    if held is None or held[0] != pid:
        with _WRITE_LOCKS_GUARD:
            held = _WRITE_LOCKS.get(db)
            if held is None or held[0] != pid:
                held = _WRITE_LOCKS[db] = (pid, threading.RLock())
    return held[1]


def _transaction(db: peewee.Database):
    """One top-level transaction: ``BEGIN IMMEDIATE`` on SQLite, so a read-then-write never fails on a
    lock upgrade; ``BEGIN`` on PostgreSQL."""
    if isinstance(db, peewee.SqliteDatabase):
        return db.atomic(lock_type="IMMEDIATE")
    return db.atomic()


@contextlib.contextmanager
def write_transaction(db: peewee.Database):
    """``db.atomic()``; on SQLite ``BEGIN IMMEDIATE``, so a read-then-write never fails on a lock upgrade.

    SQLite takes one writer at a time, and a connection that finds the lock taken sleeps in SQLite's
    busy handler (1, 2, 5, 10 ... ms) however soon the lock is free again. Threads of one process
    therefore queue on a Python lock first (woken as soon as the holder leaves); only writers in
    other processes still meet the busy handler."""
    with _write_lock(db), _transaction(db):
        yield


@contextlib.contextmanager
def statement_writes(db: peewee.Database):
    """Several writes of one statement each, every one its own transaction (peewee runs both
    drivers in autocommit), with SQLite's process write lock taken once for all of them; yields
    ``run(sql, params) -> rowcount``. A failure leaves the writes before it stored.

    For the writes of a feed page or a peek answer. Taken per write, the lock changed hands between
    a process's threads hundreds of times a page, and each time its holder also had to win the GIL
    back from threads decoding Keepa's answers while the others queued behind it: a sampling profile
    of the worker found its feed scan waiting on this lock for 45 % of its time."""
    with _write_lock(db):
        cursor = db.cursor()  # one for all the writes: execute_sql would open one a statement

        def run(sql: str, params: tuple = ()) -> int:
            try:
                cursor.execute(sql, params)
            except Exception as exc:
                translated = as_peewee_error(exc)
                if translated is exc:
                    raise
                raise translated from exc
            return cursor.rowcount

        yield run


# The exception classes PEP 249 (DB-API 2.0) has every driver define, which peewee mirrors by name.
_DB_API_ERRORS = ("IntegrityError", "ProgrammingError", "OperationalError", "NotSupportedError", "DataError",
                  "InternalError", "InterfaceError", "DatabaseError")


def as_peewee_error(exc: Exception) -> Exception:
    """A driver's error (sqlite3, psycopg2) as peewee's class of the same DB-API name, as peewee's
    own ``execute_sql`` raises it; any other exception unchanged."""
    for cls in type(exc).__mro__:
        if cls.__name__ in _DB_API_ERRORS and cls.__module__ != peewee.__name__:
            return getattr(peewee, cls.__name__)(*exc.args)
    return exc


@contextlib.contextmanager
def statement_transaction(db: peewee.Database):
    """:func:`statement_writes` inside one transaction (``BEGIN IMMEDIATE`` on SQLite), for a
    per-ASIN write of several statements; the same guarantees as :func:`write_transaction`.

    Begun and ended by hand in peewee's ``manual_commit()``, which refuses to run inside an
    ``atomic()`` block; peewee does not track the BEGIN sent here, so never nest one of these in
    another. On a SQLite file ``atomic()`` cost ~7 us more than this on a one-row write of ~36 us."""
    with statement_writes(db) as run, db.manual_commit():
        if isinstance(db, peewee.SqliteDatabase):
            db.begin(lock_type="IMMEDIATE")
        else:
            db.begin()
        try:
            yield run
            db.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                db.rollback()
            raise


def password_of(db: peewee.Database) -> str | None:
    return db.connect_params.get("password") if isinstance(db, peewee.PostgresqlDatabase) else None


def storage_error(db: peewee.Database, exc: BaseException, doing: str) -> StorageError:
    """Translate a driver error into the project's tree, naming the database but never its password."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    secret = password_of(db)
    if secret:
        text = text.replace(secret, "***")
    unavailable = isinstance(exc, peewee.OperationalError | peewee.InterfaceError)
    kind = DatabaseUnavailable if unavailable else StorageError
    what = "is unavailable" if unavailable else "refused the call"
    return kind(f"{describe(db)} {what} while {doing}: {text}")


def drop_connection(db: peewee.Database) -> None:
    """Close this thread's connection so the next call opens a fresh one. A connection that fails
    to close (it broke) is forgotten all the same: peewee's ``close()`` resets its state either way."""
    try:
        db.close()
    except Exception:
        log.debug("closing a failed connection to %s raised", describe(db), exc_info=True)
