"""Shared fixtures: real redis-server and PostgreSQL, started on free loopback ports for the session.

    redis_service      session  the RedisServer (.url, .port, .stop(), .start(), .restart(), .kill())
    redis_server       session  its URL, redis://127.0.0.1:PORT/0
    postgres_service   session  the PostgresServer (.url(db), .create_database(), .drop_database(name),
                                .stop(), .start(), .restart())
    postgres_server    session  postgresql://keepa:PASSWORD@127.0.0.1:PORT/keepa_deals, a fresh database
    postgres_database  test     postgresql:// URL of a new empty database, dropped after the test
    stack              test     a real keepa-deals stack (tests/stack.py), closed after the test

A missing binary fails the test with a sentence saying to run ``make deps``. Tests that stop a
session service must start it again (``try/finally``), since later tests share it.
"""

from __future__ import annotations

import pytest

from tests.services import PostgresServer, RedisServer, ServiceUnavailable


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory):
    try:
        server = RedisServer(str(tmp_path_factory.mktemp("redis")))
        server.start()  # stops what it started if it fails
    except ServiceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(redis_service) -> str:
    return redis_service.url


@pytest.fixture(scope="session")
def postgres_service():
    try:
        server = PostgresServer()
    except ServiceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
    except BaseException as exc:
        server.cleanup()
        if isinstance(exc, ServiceUnavailable):
            pytest.fail(str(exc), pytrace=False)
        raise
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def postgres_server(postgres_service) -> str:
    return postgres_service.create_database("keepa_deals")


@pytest.fixture
def postgres_database(postgres_service):
    url = postgres_service.create_database()
    try:
        yield url
    finally:
        if postgres_service.running:
            postgres_service.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture
def stack(tmp_path):
    from tests.stack import Stack

    running = Stack(tmp_path)
    try:
        yield running
    finally:
        running.close()
