"""The service fixtures other tests rely on: real redis-server and PostgreSQL on loopback."""

from __future__ import annotations

import psycopg2
import pytest
import redis

from tests.services import PostgresServer, RedisServer, ServiceUnavailable, postgres_bin_dir

pytestmark = pytest.mark.integration


def test_redis_server_yields_a_loopback_url_that_answers(redis_server):
    assert redis_server.startswith("redis://127.0.0.1:") and redis_server.endswith("/0")
    client = redis.Redis.from_url(redis_server)
    assert client.ping() is True
    assert client.config_get("save") == {"save": ""}
    client.close()


def test_a_killed_redis_server_comes_back_on_the_same_url_empty(redis_service, redis_server):
    client = redis.Redis.from_url(redis_server)
    client.set("keepa-deals:test", "1")
    redis_service.kill()
    try:
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        redis_service.start()
    assert redis_service.url == redis_server
    assert client.ping() is True
    assert client.get("keepa-deals:test") is None  # no persistence
    client.close()


def test_postgres_server_yields_a_url_to_a_database_that_accepts_logins(postgres_server):
    assert postgres_server.startswith("postgresql://keepa:") and "@127.0.0.1:" in postgres_server
    conn = psycopg2.connect(postgres_server)
    with conn.cursor() as cur:
        cur.execute("SELECT current_database(), inet_server_addr()::text")
        assert cur.fetchone() == ("keepa_deals", "127.0.0.1/32")
    conn.close()


def test_each_postgres_database_fixture_is_a_new_empty_database(postgres_database, postgres_server):
    assert postgres_database != postgres_server
    conn = psycopg2.connect(postgres_database)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        assert cur.fetchone() == (0,)
    conn.close()


def test_a_missing_redis_binary_says_to_run_make_deps(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceUnavailable, match="make deps"):
        RedisServer(str(tmp_path))


def test_missing_postgres_programs_say_to_run_make_deps(tmp_path, monkeypatch):
    monkeypatch.setenv("PG_BIN", str(tmp_path))
    with pytest.raises(ServiceUnavailable, match="make deps"):
        postgres_bin_dir()
    with pytest.raises(ServiceUnavailable, match="make deps"):
        PostgresServer()
