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
from urllib.parse import parse_qsl, unquote, urlsplit

import peewee

from keepa_deals.errors import ConfigError, DatabaseUnavailable, StorageError

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
        return _sqlite(sqlite_path(url), busy_timeout_ms)
    if scheme in _POSTGRES_SCHEMES:
        return _postgres(url)
    raise ConfigError(f"{VARIABLE} must start with sqlite:// or postgresql://, got {redact_url(url)!r}")


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
    db._keepa_write_lock = (os.getpid(), threading.RLock())  # see write_transaction
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


@contextlib.contextmanager
def write_transaction(db: peewee.Database):
    """``db.atomic()``; on SQLite ``BEGIN IMMEDIATE``, so a read-then-write never fails on a lock upgrade.

    SQLite takes one writer at a time, and a connection that finds the lock taken sleeps in SQLite's
    busy handler (1, 2, 5, 10 ... ms) however soon the lock is free again. Threads of one process
    therefore queue on a Python lock first (woken as soon as the holder leaves); only writers in
    other processes still meet the busy handler."""
    if isinstance(db, peewee.SqliteDatabase):
        with _write_lock(db), db.atomic(lock_type="IMMEDIATE"):
            yield
    else:
        with db.atomic():
            yield


# peewee's own translation of sqlite3/psycopg2 errors into its exception tree, as execute_sql uses
_AS_PEEWEE_ERRORS = peewee.__exception_wrapper__


@contextlib.contextmanager
def statement_writes(db: peewee.Database):
    """Several writes of one statement each, every one its own transaction (both drivers run in
    autocommit under peewee), with SQLite's process write lock taken once for all of them; yields
    ``run(sql, params) -> rowcount``. A failure leaves the writes before it stored.

    For the writes of a feed page or a peek answer. Taken per write, the lock changed hands between
    a process's threads hundreds of times a page, and each time its holder also had to win the GIL
    back from threads decoding Keepa's answers while the others queued behind it: a sampling profile
    of the worker found its feed scan waiting on this lock for 45 % of its time."""
    with _write_lock(db) if isinstance(db, peewee.SqliteDatabase) else contextlib.nullcontext(), _AS_PEEWEE_ERRORS:
        cursor = db.connection().cursor()

        def run(sql: str, params: tuple = ()) -> int:
            cursor.execute(sql, params)
            return cursor.rowcount

        yield run


@contextlib.contextmanager
def statement_transaction(db: peewee.Database):
    """:func:`statement_writes` inside one transaction (``BEGIN IMMEDIATE`` on SQLite), for a
    per-ASIN write of several statements; the same guarantees as :func:`write_transaction`.

    peewee's ``atomic()`` bookkeeping added ~13 us to a ~47 us one-row write (measured in
    alternating blocks on one SQLite file). Never nest it inside another transaction."""
    with statement_writes(db) as run:
        run("BEGIN IMMEDIATE" if isinstance(db, peewee.SqliteDatabase) else "BEGIN")
        try:
            yield run
        except BaseException:
            with contextlib.suppress(Exception):
                run("ROLLBACK")
            raise
        run("COMMIT")


def _write_lock(db: peewee.SqliteDatabase) -> threading.RLock:
    pid = os.getpid()
    held = getattr(db, "_keepa_write_lock", None)
    if held is None or held[0] != pid:  # a forked child starts with a lock of its own
        held = (pid, threading.RLock())
        db._keepa_write_lock = held
    return held[1]


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


def drop_connection(db: peewee.Database, *, close: bool = True) -> None:
    """Forget this thread's connection so the next call opens a fresh one.

    ``close=False`` after a fork: the connection belongs to the parent, so it is dropped unclosed.
    """
    if close:
        try:
            db.close()
            return
        except Exception:  # a dead connection may fail to close; it is gone either way
            log.debug("closing a failed connection to %s raised", describe(db), exc_info=True)
    if hasattr(db, "dispose"):  # peewee 4
        db.dispose()
    else:
        db._state.reset()
